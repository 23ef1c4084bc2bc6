// Device signals end to end: real agent processes with an exec signal source reading a file the test changes,
// against the real server, which stores each device's latest sample (src/server/db/device-signals.ts).
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { api } from '../src/cli/client.ts';
import { signalSamples } from '../src/server/db/device-signals.ts';
import {
  BAD,
  enrollToken,
  GOOD,
  journalOf,
  onVersion,
  pin,
  publishReleases,
  seededDevice,
  start,
  waitEnrolled,
} from './agent-harness.ts';
import { killTracked } from './helpers/processes.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const COMPONENT = 'sensor-content';
const WAIT_MS = 120_000;

/** A seeded device whose component reports `restarts` from an exec source reading `restarts` in its folder. */
function signalDevice(ts: TestServer, content: string, name: string, token: string, interval: string) {
  let counter = '';
  const d = seededDevice(ts, content, name, token, {
    edit: (cfg) => {
      counter = join(ts.dir, 'devices', name, 'restarts');
      const [comp] = cfg.components as Array<Record<string, unknown>>;
      comp.signals = {
        interval,
        sources: [
          {
            // The component's environment reaches the script: a wrong one prints nothing useful.
            exec: `[ "$RINGFENCE_COMPONENT" = ${COMPONENT} ] && echo "restarts=$(cat ${counter})"`,
            names: ['restarts'],
            timeout: '5s',
          },
        ],
      };
    },
  });
  writeFileSync(counter, '1\n');
  return { d, counter };
}

async function sampleOf(ts: TestServer, id: string) {
  const rows = await signalSamples(ts.srv.ctx.store.db, COMPONENT, 0, [id]);
  return rows[0] ?? null;
}

async function lastSeen(ts: TestServer, id: string): Promise<number> {
  const row = await ts.srv.ctx.store.db
    .selectFrom('devices')
    .select('last_seen_at')
    .where('id', '=', id)
    .executeTakeFirst();
  return Number(row?.last_seen_at ?? 0);
}

describe('agent signals end to end', { timeout: 600_000 }, () => {
  let ts: TestServer;
  let content: string;

  before(async () => {
    ts = await startTestServer();
    content = await publishReleases(ts);
    // The server asks for a component's signals only while a rollout with an evidence gate of it is active: this
    // one waits for approval of its first wave, so it touches no device.
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source: `name: compared
waves:
  - name: gated
    approval: true
    size: 1
    bake: 1h
    compare:
      signals:
        - name: restarts
  - name: rest
    size: 100%
`,
    });
    await api(ts.conn, 'POST', '/v1/admin/rollouts', { release: `${COMPONENT}@${BAD}`, plan: 'compared' });
  });
  after(async () => {
    await killTracked();
    await ts.close();
  });
  afterEach(() => killTracked());

  it('a sample reaches the server, and a later one carries the changed value', async () => {
    const token = await enrollToken(ts, 1);
    const { d, counter } = signalDevice(ts, content, 'sig-a', token, '5s');
    start(d);
    const id = await waitEnrolled(ts, d);
    const first = await until(
      () => sampleOf(ts, id),
      (s) => s?.values.restarts === 1,
      WAIT_MS,
      'the first sample (restarts=1) stored',
    );
    assert.deepEqual(first?.values, { restarts: 1 });
    assert.ok(first!.sampledAt > 0 && first!.receivedAt >= first!.sampledAt - 60_000);

    writeFileSync(counter, '5\n');
    const later = await until(
      () => sampleOf(ts, id),
      (s) => s?.values.restarts === 5,
      WAIT_MS,
      'a later sample (restarts=5) stored',
    );
    assert.ok(later!.receivedAt > first!.receivedAt, 'received later');
    assert.ok(later!.sampledAt >= first!.sampledAt + 5000, 'sampled an interval (5s) later at the earliest');
  });

  it('a sample is sent once, and probation takes a new one regardless of the interval', async () => {
    const token = await enrollToken(ts, 1);
    // An interval of an hour: after the first sample, only probation can take another.
    const { d, counter } = signalDevice(ts, content, 'sig-b', token, '1h');
    start(d);
    const id = await waitEnrolled(ts, d);
    const first = await until(
      () => sampleOf(ts, id),
      (s) => s?.values.restarts === 1,
      WAIT_MS,
      'the first sample stored',
    );
    // Several check-ins later (poll 250 ms), the server still holds that one reception: it was sent once.
    await until(
      () => lastSeen(ts, id),
      (t) => t > first!.receivedAt + 2000,
      WAIT_MS,
      'check-ins after the first sample',
    );
    const again = await sampleOf(ts, id);
    assert.equal(again?.receivedAt, first!.receivedAt, 'the same sample was not sent again');

    writeFileSync(counter, '2\n');
    const pinnedAt = Date.now();
    await pin(ts, d, GOOD);
    await onVersion(d, GOOD);
    assert.equal(journalOf(d).lastHealth?.ok, true);
    const probed = await until(
      () => sampleOf(ts, id),
      (s) => s?.values.restarts === 2,
      WAIT_MS,
      'the probation sample (restarts=2) stored',
    );
    assert.ok(probed!.sampledAt >= pinnedAt, 'sampled after the update started');
    assert.ok(probed!.receivedAt > first!.receivedAt);
  });
});
