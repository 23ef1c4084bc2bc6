// Devices written straight into a store (no HTTP, no enrollment) for tests of the services and the driver.

import type { Labels } from '../../src/protocol/device.ts';
import type { Store } from '../../src/server/db/database.ts';
import { upsertComponents } from '../../src/server/db/device-components.ts';
import { insertDevice } from '../../src/server/db/devices.ts';
import { encode } from '../../src/server/db/json.ts';

/** A live device `id` with `labels`, running `component` at `version`, idle. */
export async function seedDevice(
  store: Store,
  d: { id: string; labels: Labels; component: string; version: string; now: number },
): Promise<void> {
  await insertDevice(store.db, {
    id: d.id,
    name: d.id,
    tokenHash: `hash-${d.id}`,
    labels: d.labels,
    enrollLabels: {},
    agentVersion: 'test',
    now: d.now,
  });
  await upsertComponents(store.db, [
    {
      device_id: d.id,
      component: d.component,
      version: d.version,
      state: 'idle',
      health: encode({}),
      quarantined: encode([]),
      updated_at: d.now,
    },
  ]);
}
