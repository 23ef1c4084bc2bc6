// Table `devices`: Enrolled devices.
import type { Generated } from 'kysely';

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
