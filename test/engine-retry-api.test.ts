// `rollout retry` end to end over real HTTP and the real CLI: devices that failed for a transient reason
// (download) are offered the release again; a health failure is not; the audit chain still verifies.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { api } from '../src/cli/client.ts';
import { importRelease } from '../src/cli/commands/release.ts';
import { writeContent } from '../src/demo/fleet.ts';
import { verifyAudit } from '../src/server/db/audit.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { guardProcesses } from './helpers/processes.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '..', 'bin', 'ringfence.js');

interface Device {
  id: string;
  token: string;
}

async function checkin(
  ts: TestServer,
  d: Device,
  body: unknown,
): Promise<{ desired: Array<{ component: string; version: string }> }> {
  const res = await fetch(new URL('/v1/checkin', ts.url), {
    method: 'POST',
    headers: { authorization: `Bearer ${d.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()) as { desired: Array<{ component: string; version: string }> };
}

const failed = (cls: string) => ({
  components: [{ name: 'sensor-content', version: '1.0.0', state: 'idle' }],
  reports: [
    {
      txn_id: `t-${cls}-${++txn}`,
      component: 'sensor-content',
      version: '2.0.0',
      from_version: '1.0.0',
      outcome: 'failed',
      class: cls,
      reason: `${cls} went wrong`,
    },
  ],
});
let txn = 0;
const succeeded = () => ({
  components: [{ name: 'sensor-content', version: '2.0.0', state: 'idle' }],
  reports: [
    {
      txn_id: `t-ok-${++txn}`,
      component: 'sensor-content',
      version: '2.0.0',
      from_version: '1.0.0',
      outcome: 'succeeded',
    },
  ],
});

describe('rollout retry over the API and the CLI', { timeout: 300_000 }, () => {
  let ts: TestServer;
  const devs: Device[] = [];

  before(async () => {
    ts = await startTestServer();
    const tok = await api<{ token: string }>(ts.conn, 'POST', '/v1/admin/enroll-tokens', { uses: 3 });
    for (let i = 0; i < 3; i++) {
      const res = await fetch(new URL('/v1/enroll', ts.url), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: tok.token, name: `d${i}` }),
      });
      const e = (await res.json()) as { device_id: string; device_token: string };
      devs.push({ id: e.device_id, token: e.device_token });
      await checkin(ts, devs[i], {
        components: [{ name: 'sensor-content', version: '1.0.0', state: 'idle' }],
      });
    }
    await importRelease(ts.conn, 'sensor-content', '2.0.0', [writeContent(join(ts.dir, 'c2'), '2.0.0', 0)]);
    await api(ts.conn, 'POST', '/v1/admin/releases/sensor-content@2.0.0/approve', {});
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source:
        'name: rt\nfirst_wave_cap: 100%\nreport_deadline: 10m\nwaves:\n  - { name: all, size: 100%, max_failures: 1 }\n',
    });
  });

  after(() => ts.close());

  it('re-offers to the download failure only, resumes the halted rollout, and completes', async () => {
    const r = await api<RolloutView>(ts.conn, 'POST', '/v1/admin/rollouts', {
      release: 'sensor-content@2.0.0',
      plan: 'rt',
    });
    for (const d of devs)
      await until(
        () => checkin(ts, d, { components: [{ name: 'sensor-content', version: '1.0.0', state: 'idle' }] }),
        (c) => c.desired.some((x) => x.version === '2.0.0'),
        120_000,
        'offer',
      );
    const [a, b, c] = devs;
    await checkin(ts, a, failed('download'));
    await checkin(ts, b, failed('health'));
    await checkin(ts, c, succeeded());
    const halted = await until(
      () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${r.id}`),
      (v) => v.status === 'halted',
      120_000,
      'halt',
    );
    assert.match(halted.state.reason ?? '', /over the failure budget/);

    // The CLI, as an operator would type it.
    const env = { ...process.env, RINGFENCE_SERVER: ts.conn.server, RINGFENCE_TOKEN: ts.conn.token };
    const out = await run(process.execPath, [BIN, 'rollout', 'retry', String(r.id), '--json'], { env });
    const view = JSON.parse(out.stdout) as RolloutView;
    assert.equal(view.status, 'running');

    const again = await checkin(ts, a, {
      components: [{ name: 'sensor-content', version: '1.0.0', state: 'idle' }],
    });
    assert.ok(
      again.desired.some((x) => x.version === '2.0.0'),
      'the download failure is offered again',
    );
    await checkin(ts, a, succeeded());
    const end = await until(
      () => api<RolloutView>(ts.conn, 'GET', `/v1/admin/rollouts/${r.id}`),
      (v) => v.status === 'completed',
      120_000,
      'completion',
    );
    assert.equal(end.status, 'completed');

    const audit = await verifyAudit(ts.srv.ctx.store.db);
    assert.equal(audit.brokenAt, null);
    assert.ok(audit.entries > 0);
  });

  it('the API route answers 404 for an unknown rollout', async () => {
    await assert.rejects(api(ts.conn, 'POST', '/v1/admin/rollouts/99999/retry', {}), /404/);
  });
});

// Last of the file's top-level hooks: no child of this file may outlive its tests.
guardProcesses();
