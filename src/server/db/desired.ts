// Table `desired`: what each device should run per component (written only by engine commands).
import type { Db } from './database.ts';
import { insertShaped, padIn, runShaped } from './shaped.ts';

export interface DesiredTable {
  device_id: string;
  component: string;
  version: string;
  rollout_id: number;
  updated_at: number;
}

/** Per device, component → version the rollouts want (one set-based read). */
export async function desiredByDevice(db: Db, ids: string[]): Promise<Map<string, Map<string, string>>> {
  const out = new Map<string, Map<string, string>>();
  if (ids.length === 0) return out;
  const padded = padIn(ids);
  const rows = await runShaped(db, `desiredByDevice:${padded.length}`, padded, () =>
    db.selectFrom('desired').select(['device_id', 'component', 'version']).where('device_id', 'in', padded),
  );
  for (const r of rows) {
    const m = out.get(r.device_id) ?? new Map<string, string>();
    m.set(r.component, r.version);
    out.set(r.device_id, m);
  }
  return out;
}

/** Forgets what a device should run: of one component (a withdrawal), or of all (it was retired). */
export async function clearDesired(db: Db, deviceId: string, component?: string): Promise<void> {
  let q = db.deleteFrom('desired').where('device_id', '=', deviceId);
  if (component !== undefined) q = q.where('component', '=', component);
  await q.execute();
}

/** Rows per statement: 5 columns each, well under SQLite's (32,766) and PostgreSQL's (65,535) parameter limits. */
const CHUNK = 1000;

/**
 * Sets many devices' desired versions at once (one statement per CHUNK rows): a wave start offers hundreds of
 * thousands of devices, which one statement per device would take minutes to persist.
 */
export async function setDesiredMany(
  db: Db,
  rows: ReadonlyArray<{
    deviceId: string;
    component: string;
    version: string;
    rolloutId: number;
    now: number;
  }>,
): Promise<void> {
  // The last row wins for a device named twice (a statement may not upsert one key twice in PostgreSQL).
  const latest = new Map<string, (typeof rows)[number]>();
  for (const r of rows) latest.set(`${r.deviceId}\u0000${r.component}`, r);
  const list = [...latest.values()];
  for (let i = 0; i < list.length; i += CHUNK) {
    const values = list.slice(i, i + CHUNK).map((d) => ({
      device_id: d.deviceId,
      component: d.component,
      version: d.version,
      rollout_id: d.rolloutId,
      updated_at: d.now,
    }));
    await insertShaped(db, 'setDesiredMany', values, CHUNK, () =>
      db
        .insertInto('desired')
        .values(values)
        .onConflict((oc) =>
          oc.columns(['device_id', 'component']).doUpdateSet((eb) => ({
            version: eb.ref('excluded.version'),
            rollout_id: eb.ref('excluded.rollout_id'),
            updated_at: eb.ref('excluded.updated_at'),
          })),
        ),
    );
  }
}

/** Clears one component's desired version on many devices (withdrawals), CHUNK ids per statement. */
export async function clearDesiredMany(
  db: Db,
  deviceIds: readonly string[],
  component: string,
): Promise<void> {
  for (let i = 0; i < deviceIds.length; i += CHUNK)
    await db
      .deleteFrom('desired')
      .where('component', '=', component)
      .where('device_id', 'in', deviceIds.slice(i, i + CHUNK))
      .execute();
}

/** Every (component, version) some device should run (release gc keeps them). */
export async function desiredReleaseRefs(db: Db): Promise<Array<{ component: string; version: string }>> {
  return db.selectFrom('desired').select(['component', 'version']).execute();
}
