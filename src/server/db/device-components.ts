// Table `device_components`: what each device runs per component, as it last reported. One row mapper and
// the set-based reads and writes of the check-in batch.
import { type Selectable, sql } from 'kysely';
import type { ComponentState } from '../../protocol/component-state.ts';
import type { Db } from './database.ts';
import { inChunks } from './in-chunks.ts';
import { decode, type Json } from './json.ts';
import { padIn, runShaped } from './shaped.ts';

export interface DeviceComponentTable {
  device_id: string;
  component: string;
  version: string | null;
  state: ComponentState; // the transaction phase, else held, pinned or idle (see protocol/component-state.ts)
  health: Json<Record<string, unknown>>; // the last health result, bounded
  quarantined: Json<string[]>;
  updated_at: number;
}

export type DeviceComponentRow = Selectable<DeviceComponentTable>;

/** One component of a device, as the server shows it. */
export interface DeviceComponent {
  deviceId: string;
  name: string;
  version: string | null;
  state: ComponentState;
  health: Record<string, unknown>;
  quarantined: string[];
}

/** Maps a `device_components` row. */
export function toDeviceComponent(r: DeviceComponentRow): DeviceComponent {
  return {
    deviceId: r.device_id,
    name: r.component,
    version: r.version,
    state: r.state,
    health: decode(r.health),
    quarantined: decode(r.quarantined),
  };
}

/** The stored rows of these devices (all devices without `ids`). */
export async function componentRows(db: Db, ids?: string[]): Promise<DeviceComponentRow[]> {
  if (!ids) return db.selectFrom('device_components').selectAll().execute();
  if (ids.length === 0) return [];
  const padded = padIn(ids);
  return runShaped(db, `componentRows:${padded.length}`, padded, () =>
    db.selectFrom('device_components').selectAll().where('device_id', 'in', padded),
  );
}

/** Inserts or replaces component rows (in chunks: one statement per 200 rows). */
export async function upsertComponents(db: Db, rows: DeviceComponentRow[]): Promise<void> {
  for (let i = 0; i < rows.length; i += 200) {
    await db
      .insertInto('device_components')
      .values(rows.slice(i, i + 200))
      .onConflict((oc) =>
        oc.columns(['device_id', 'component']).doUpdateSet((eb) => ({
          version: eb.ref('excluded.version'),
          state: eb.ref('excluded.state'),
          health: eb.ref('excluded.health'),
          quarantined: eb.ref('excluded.quarantined'),
          updated_at: eb.ref('excluded.updated_at'),
        })),
      )
      .execute();
  }
}

/** Devices with a component whose last check-in did not say it verifies releases with TUF (the demo's check). */
export async function devicesWithoutVerifiedTrust(db: Db): Promise<string[]> {
  const rows = await db
    .selectFrom('device_components')
    .select('device_id')
    .where(sql<boolean>`health not like ${'%"trust":"verified"%'}`)
    .execute();
  return rows.map((r) => r.device_id);
}

/** Every (component, version) some device runs, as last reported (null: none installed; release gc keeps them). */
export async function installedReleaseRefs(
  db: Db,
): Promise<Array<{ component: string; version: string | null }>> {
  return db.selectFrom('device_components').select(['component', 'version']).execute();
}

/** Per device that has the component: the version it runs and the state it last reported. */
export async function componentStatesOf(
  db: Db,
  component: string,
  ids?: readonly string[],
): Promise<Array<{ deviceId: string; version: string | null; state: ComponentState }>> {
  const rows = await inChunks(ids, (chunk) => {
    let q = db
      .selectFrom('device_components')
      .select(['device_id', 'version', 'state'])
      .where('component', '=', component);
    if (chunk) q = q.where('device_id', 'in', chunk);
    return q.execute();
  });
  return rows.map((r) => ({ deviceId: r.device_id, version: r.version, state: r.state }));
}
