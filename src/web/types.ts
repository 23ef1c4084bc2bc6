// The API's shapes, taken from the server's route modules as types only (nothing of the server is bundled).

export type { AuditEntry } from '../server/db/audit.ts';
export type { DeviceSummary } from '../server/routes/admin-fleet.ts';
export type { ReleaseView } from '../server/routes/admin-releases.ts';
export type { RolloutView } from '../server/routes/admin-rollouts.ts';

export interface AuditVerify {
  entries: number;
  brokenAt: number | null;
  ok: boolean;
}
export type {
  CheckView,
  DeviceHistoryPage,
  HistoryEntry,
  ReportView,
  RolloutDevicesPage,
  RolloutDeviceView,
} from '../server/services/history-views.ts';

/**
 * Who imported / started it and what awaits whose approval (issue 12). Optional here so the dashboard reads
 * answers of servers from before; the server's own view types carry them as well.
 */
export interface Governance {
  imported_by?: string | null;
  started_by?: string | null;
  awaiting_approval?: import('./session.tsx').AwaitingApproval | null;
}
