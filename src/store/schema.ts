// Table shapes of the Ringfence database, shared by the SQLite and PostgreSQL dialects.
// Times are integer milliseconds since the epoch; JSON is stored as text so both dialects agree.
import type { Generated } from 'kysely';

export interface MetaTable {
  key: string;
  value: string;
}

export interface ReleaseTable {
  id: Generated<number>;
  component: string;
  version: string;
  artifacts: string; // JSON Artifact[]
  provenance: string; // JSON
  created_at: number;
  approved_at: number | null;
  approved_by: string | null;
}

export interface DeviceTable {
  id: string;
  name: string;
  token_hash: string;
  labels: string; // JSON Record<string,string>
  agent_version: string;
  enrolled_at: number;
  last_seen_at: number;
  held: number; // 0/1: operator hold, wins over every rollout
  pins: string; // JSON Record<component, version>
  channel: Generated<string>; // 'early' gets a release first; 'general' only once it was promoted
  deferred_until: number | null; // nothing is offered before this instant
  enroll_labels: Generated<string>; // JSON labels from the enrollment token: they win over the device's own
  retired_at: number | null; // retired: token revoked, out of every rollout
}

export interface DeviceComponentTable {
  device_id: string;
  component: string;
  version: string | null;
  state: string;
  health: string; // JSON of the last health result
  quarantined: string; // JSON string[]
  updated_at: number;
}

export interface EnrollTokenTable {
  id: string;
  token_hash: string;
  uses_left: number | null; // null = unlimited
  expires_at: number | null;
  labels: string; // JSON labels added to devices enrolled with this token
  created_at: number;
  revoked: number;
}

export interface PlanTable {
  name: string;
  source: string; // YAML as applied
  plan: string; // JSON Plan (validated)
  updated_at: number;
}

export interface RolloutTable {
  id: Generated<number>;
  component: string;
  version: string;
  plan_name: string;
  plan: string; // JSON snapshot of the plan at start: later edits do not change a running rollout
  status: string;
  state: string; // JSON RolloutState
  wake_at: number | null;
  dirty: number;
  created_at: number;
  updated_at: number;
  channel: string | null; // only devices of this channel; null = every device
}

export interface AssignmentTable {
  rollout_id: number;
  device_id: string;
  wave: number;
  state: string;
  outcome: string | null; // the device's own verdict: succeeded | failed | rolled-back
  from_version: string | null;
  offered_at: number | null;
  reported_at: number | null;
  reason: string | null;
}

export interface DesiredTable {
  device_id: string;
  component: string;
  version: string;
  rollout_id: number;
  updated_at: number;
}

export interface ReportTable {
  txn_id: string;
  device_id: string;
  component: string;
  version: string;
  outcome: string;
  reason: string | null;
  detail: string; // JSON
  received_at: number;
}

export interface AuditTable {
  seq: Generated<number>;
  at: number;
  actor: string;
  action: string;
  subject: string;
  detail: string; // JSON
  prev_hash: string;
  hash: string;
}

export interface Database {
  meta: MetaTable;
  releases: ReleaseTable;
  devices: DeviceTable;
  device_components: DeviceComponentTable;
  enroll_tokens: EnrollTokenTable;
  plans: PlanTable;
  rollouts: RolloutTable;
  assignments: AssignmentTable;
  desired: DesiredTable;
  reports: ReportTable;
  audit: AuditTable;
}
