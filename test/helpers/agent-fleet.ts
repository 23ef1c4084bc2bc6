// A fleet of real agent processes against a test server, for the end-to-end rollout tests: the devices, the
// fleet as the server lists it, and a good and a bad release of sensor-content.
import { join } from 'node:path';
import { api } from '../../src/cli/client.ts';
import { importRelease } from '../../src/cli/commands/release.ts';
import {
  type DeviceSpec,
  prepareDevice,
  type SpawnedDevice,
  startAgent,
  writeContent,
} from '../../src/demo/fleet.ts';
import type { DeviceSummary } from '../../src/server/routes/admin-fleet.ts';
import { track } from './processes.ts';
import { type TestServer, until } from './server.ts';

/**
 * Starts `n` agent processes, device i named and labelled by `spec(i)`, all enrolling with one token, and returns
 * them running (the caller stops them with stopAgents). Nothing waits for them to enroll: see fleetUntil.
 */
export async function startAgentFleet(
  ts: TestServer,
  n: number,
  spec: (i: number) => DeviceSpec,
): Promise<SpawnedDevice[]> {
  const tok = await api<{ token: string }>(ts.conn, 'POST', '/v1/admin/enroll-tokens', { uses: n });
  const devices = Array.from({ length: n }, (_, i) =>
    prepareDevice(join(ts.dir, 'devices'), spec(i), ts.url, tok.token, { probationMs: 600 }),
  );
  for (const d of devices) track(startAgent(d, { RINGFENCE_LOG_LEVEL: 'warn' }));
  return devices;
}

/** Polls the server's device list until `ok` holds for it (or throws after `ms`, naming `what`). */
export function fleetUntil(
  ts: TestServer,
  ok: (fleet: DeviceSummary[]) => boolean,
  ms: number,
  what: string,
): Promise<DeviceSummary[]> {
  return until(() => api<DeviceSummary[]>(ts.conn, 'GET', '/v1/admin/devices'), ok, ms, what);
}

/**
 * Imports sensor-content 1.0.0, whose service starts, and 2.0.0, whose service crashes on start (threads=0) so
 * that it fails its health check on every device. Neither is approved.
 */
export async function importGoodAndBadContent(ts: Pick<TestServer, 'conn' | 'dir'>): Promise<void> {
  await importRelease(ts.conn, 'sensor-content', '1.0.0', [writeContent(join(ts.dir, 'c1'), '1.0.0', 4)]);
  await importRelease(ts.conn, 'sensor-content', '2.0.0', [writeContent(join(ts.dir, 'c2'), '2.0.0', 0)]);
}

/**
 * Waits until the server has seen `n` more check-ins from the device (each a new last_seen_at): the event a
 * "nothing happens" check waits for, instead of a fixed sleep that a busy machine can make too short.
 */
export async function checkinsSeen(ts: TestServer, device: { name: string }, n = 3): Promise<void> {
  const seen = new Set<number>();
  await until(
    async () => {
      const d = await api<{ last_seen_at: number }>(ts.conn, 'GET', `/v1/admin/devices/${device.name}`);
      seen.add(d.last_seen_at);
      return seen.size;
    },
    (count) => count > n,
    120_000,
    `${n} check-ins from ${device.name}`,
  );
}
