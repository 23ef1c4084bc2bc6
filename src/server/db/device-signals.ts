// Table `device_signals`: each device's latest signal sample per component (evidence gates,
// docs/evidence-gates.md). Only the latest is kept: a gate compares one value per device, and history would
// grow with every check-in. `received_at` is the server's clock: cohorts are cut by it, never by the device's.
import type { Db } from './database.ts';
import { inChunks } from './in-chunks.ts';
import { decode, encode, type Json } from './json.ts';

export interface DeviceSignalTable {
  device_id: string;
  component: string;
  sampled_at: number; // the device's time of sampling (shown only)
  version: string | null; // the component version the device reported with the sample
  signal_values: Json<Record<string, number>>;
  received_at: number;
}

/** A device's latest sample of one component's signals, as the server stored it. */
export interface StoredSignalSample {
  deviceId: string;
  component: string;
  sampledAt: number;
  /** The component version reported in the same check-in: a sample describes that version. */
  version: string | null;
  values: Record<string, number>;
  receivedAt: number;
}

/** Inserts or replaces samples (in chunks of 200 rows). */
export async function upsertSignals(db: Db, rows: readonly StoredSignalSample[]): Promise<void> {
  for (let i = 0; i < rows.length; i += 200) {
    await db
      .insertInto('device_signals')
      .values(
        rows.slice(i, i + 200).map((r) => ({
          device_id: r.deviceId,
          component: r.component,
          sampled_at: Math.round(r.sampledAt),
          version: r.version,
          signal_values: encode(r.values),
          received_at: r.receivedAt,
        })),
      )
      .onConflict((oc) =>
        oc.columns(['device_id', 'component']).doUpdateSet((eb) => ({
          sampled_at: eb.ref('excluded.sampled_at'),
          version: eb.ref('excluded.version'),
          signal_values: eb.ref('excluded.signal_values'),
          received_at: eb.ref('excluded.received_at'),
        })),
      )
      .execute();
  }
}

/** The latest samples of a component received at or after `since` (of these devices only, with `ids`). */
export async function signalSamples(
  db: Db,
  component: string,
  since: number,
  ids?: readonly string[],
): Promise<StoredSignalSample[]> {
  const rows = await inChunks(ids, (chunk) => {
    let q = db
      .selectFrom('device_signals')
      .selectAll()
      .where('component', '=', component)
      .where('received_at', '>=', since);
    if (chunk) q = q.where('device_id', 'in', chunk);
    return q.execute();
  });
  return rows.map((r) => ({
    deviceId: r.device_id,
    component: r.component,
    sampledAt: Number(r.sampled_at),
    version: r.version,
    values: decode(r.signal_values),
    receivedAt: Number(r.received_at),
  }));
}
