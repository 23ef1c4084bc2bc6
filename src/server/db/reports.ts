// Table `reports`: device transaction reports, keyed by transaction id (exactly once).
import type { Selectable } from 'kysely';
import type { ReportOutcome } from '../../protocol/device.ts';
import type { FailureClass } from '../../protocol/failure-class.ts';
import type { Db } from './database.ts';
import { encode, type Json } from './json.ts';

/** What the server keeps of a report beyond its columns: its class, whether it was offline, the bounded detail. */
export type ReportDetail = { class?: FailureClass; offline: boolean } & Record<string, unknown>;

export interface ReportTable {
  txn_id: string;
  device_id: string;
  component: string;
  version: string;
  outcome: ReportOutcome;
  reason: string | null;
  detail: Json<ReportDetail>;
  received_at: number;
}

export type ReportRow = Selectable<ReportTable>;

/** Stores a report unless its transaction id was seen before; true when it is new (exactly once). */
export async function insertReportOnce(
  db: Db,
  r: {
    txnId: string;
    deviceId: string;
    component: string;
    version: string;
    outcome: ReportOutcome;
    reason: string | null;
    detail: ReportDetail;
    now: number;
  },
): Promise<boolean> {
  const inserted = await db
    .insertInto('reports')
    .values({
      txn_id: r.txnId,
      device_id: r.deviceId,
      component: r.component,
      version: r.version,
      outcome: r.outcome,
      reason: r.reason,
      detail: encode(r.detail),
      received_at: r.now,
    })
    .onConflict((oc) => oc.column('txn_id').doNothing())
    .executeTakeFirst();
  return Number(inserted.numInsertedOrUpdatedRows ?? 0) > 0;
}

/** Reports, newest first (ties: by transaction id, descending). */
const newestFirst = (db: Db) =>
  db.selectFrom('reports').selectAll().orderBy('received_at', 'desc').orderBy('txn_id', 'desc');

/** The reports these devices sent about one release, newest first. */
export async function reportsOfRelease(
  db: Db,
  deviceIds: string[],
  component: string,
  version: string,
): Promise<ReportRow[]> {
  if (deviceIds.length === 0) return [];
  return newestFirst(db)
    .where('device_id', 'in', deviceIds)
    .where('component', '=', component)
    .where('version', '=', version)
    .execute();
}

/** How many reports a device has sent. */
export async function countDeviceReports(db: Db, deviceId: string): Promise<number> {
  const counted = await db
    .selectFrom('reports')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('device_id', '=', deviceId)
    .executeTakeFirstOrThrow();
  return Number(counted.n);
}

/** A page of a device's reports, newest first. */
export async function deviceReportsPage(
  db: Db,
  deviceId: string,
  page: { limit: number; offset: number },
): Promise<ReportRow[]> {
  return newestFirst(db).where('device_id', '=', deviceId).limit(page.limit).offset(page.offset).execute();
}
