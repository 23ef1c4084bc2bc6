// The database as Kysely sees it: one module per table (its row type, mappers and queries), composed here.
// Times are integer milliseconds since the epoch; JSON is stored as text so SQLite and PostgreSQL agree, typed
// `Json<T>` (json.ts: written with `encode`, read with `decode`); status and state columns are the engine's
// unions. Code outside db/ reads and writes through the table modules' functions, not the query builder.

import type { AssignmentTable } from './assignments.ts';
import type { AuditTable } from './audit.ts';
import type { DesiredTable } from './desired.ts';
import type { DeviceComponentTable } from './device-components.ts';
import type { DeviceSignalTable } from './device-signals.ts';
import type { DeviceTable } from './devices.ts';
import type { EnrollTokenTable } from './enroll-tokens.ts';
import type { LockGroupTable, LockHolderTable } from './fleet-locks.ts';
import type { MetaTable } from './meta.ts';
import type { OperatorTable, OperatorTokenTable } from './operators.ts';
import type { PlanTable } from './plans.ts';
import type { ReleaseTable } from './releases.ts';
import type { ReportTable } from './reports.ts';
import type { RolloutTable } from './rollouts.ts';
import type { WebhookOutboxTable, WebhookTable } from './webhooks.ts';

export type {
  AssignmentTable,
  AuditTable,
  DesiredTable,
  DeviceComponentTable,
  DeviceSignalTable,
  DeviceTable,
  EnrollTokenTable,
  LockGroupTable,
  LockHolderTable,
  MetaTable,
  OperatorTable,
  OperatorTokenTable,
  PlanTable,
  ReleaseTable,
  ReportTable,
  RolloutTable,
  WebhookOutboxTable,
  WebhookTable,
};

export interface Database {
  meta: MetaTable;
  releases: ReleaseTable;
  devices: DeviceTable;
  device_components: DeviceComponentTable;
  device_signals: DeviceSignalTable;
  enroll_tokens: EnrollTokenTable;
  plans: PlanTable;
  rollouts: RolloutTable;
  assignments: AssignmentTable;
  desired: DesiredTable;
  reports: ReportTable;
  audit: AuditTable;
  operators: OperatorTable;
  operator_tokens: OperatorTokenTable;
  lock_groups: LockGroupTable;
  lock_holders: LockHolderTable;
  webhooks: WebhookTable;
  webhook_outbox: WebhookOutboxTable;
}
