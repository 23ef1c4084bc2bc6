// Table `desired`: what each device should run per component (written only by engine commands).
import type { Db } from './database.ts';

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
  const rows = await db
    .selectFrom('desired')
    .select(['device_id', 'component', 'version'])
    .where('device_id', 'in', ids)
    .execute();
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

/** Sets the version a device should run of a component, on behalf of a rollout (an offer or a revert). */
export async function setDesired(
  db: Db,
  d: { deviceId: string; component: string; version: string; rolloutId: number; now: number },
): Promise<void> {
  await db
    .insertInto('desired')
    .values({
      device_id: d.deviceId,
      component: d.component,
      version: d.version,
      rollout_id: d.rolloutId,
      updated_at: d.now,
    })
    .onConflict((oc) =>
      oc
        .columns(['device_id', 'component'])
        .doUpdateSet({ version: d.version, rollout_id: d.rolloutId, updated_at: d.now }),
    )
    .execute();
}

/** Every (component, version) some device should run (release gc keeps them). */
export async function desiredReleaseRefs(db: Db): Promise<Array<{ component: string; version: string }>> {
  return db.selectFrom('desired').select(['component', 'version']).execute();
}
