// Evidence gates end to end on a real server (SQLite, HTTP on loopback, the real evaluator and engine), with
// scripted devices that speak the device protocol and report a signal sample at every check-in:
// - a release that doubles a signal passes every health check: a plan with only a failure budget completes it,
//   the same release under a comparison gate is halted (the numbers are in the status and the audit log);
// - two rollouts touch overlapping devices and one of them (os) raises the app's restarts: the app rollout's gate
//   sees the rise but attributes it to the os rollout, which is halted, named with the evidence; the app rollout
//   keeps going and completes.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { api, type Conn } from '../src/cli/client.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import { release, startRollout } from './helpers/protocol-device.ts';
import { startTestServer, type TestServer, until } from './helpers/server.ts';

interface Dev {
  id: string;
  token: string;
  labels: Record<string, string>;
  versions: Record<string, string>;
  base: number;
  /** `signals_wanted` of the last check-in answer. */
  wanted?: string[];
}

/** The app's restarts the device measures: its own base, doubled by a bad release of `bad` (component@version). */
type Measure = (d: Dev) => number;

let txn = 0;

/**
 * Enrolls devices; `baseOf(i)` is device i's own restarts on release 1. The default spreads them over 5..7, so a
 * doubled signal separates the cohorts completely whichever devices a wave takes: the verdicts are certain.
 */
async function enroll(
  conn: Conn,
  labels: Array<Record<string, string>>,
  versions: Record<string, string>,
  baseOf = (i: number) => 5 + (i % 3),
) {
  const tok = await api<{ token: string }>(conn, 'POST', '/v1/admin/enroll-tokens', { uses: labels.length });
  const out: Dev[] = [];
  for (const [i, l] of labels.entries()) {
    const res = await fetch(new URL('/v1/enroll', conn.server), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: tok.token, name: `ev-${tok.token.slice(-6)}-${i}`, labels: l }),
    });
    const b = (await res.json()) as { device_id: string; device_token: string };
    out.push({
      id: b.device_id,
      token: b.device_token,
      labels: l,
      versions: { ...versions },
      base: baseOf(i),
    });
  }
  // Rollouts offer a component only to devices that reported it: one check-in each first.
  for (const d of out) await cycle(conn, d, '', () => 0);
  return out;
}

/**
 * One device cycle: check in reporting every component and a fresh sample of `signalOf` (the signals belong to
 * the component named `signalComponent`); install whatever is offered and report success in a second check-in,
 * which carries the sample measured on the new release.
 */
async function cycle(conn: Conn, d: Dev, signalComponent: string, measure: Measure): Promise<void> {
  const send = async (reports: unknown[]) => {
    const components = Object.entries(d.versions).map(([name, version]) => ({
      name,
      version,
      state: 'idle',
      ...(name === signalComponent ? { signals: { at: Date.now(), values: { restarts: measure(d) } } } : {}),
    }));
    const res = await fetch(new URL('/v1/checkin', conn.server), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${d.token}` },
      body: JSON.stringify({ components, reports }),
    });
    if (!res.ok) throw new Error(`check-in ${res.status}: ${await res.text()}`);
    const b = (await res.json()) as {
      desired: Array<{ component: string; version: string }>;
      signals_wanted: string[];
    };
    d.wanted = b.signals_wanted;
    return b.desired;
  };
  const offers = await send([]);
  const reports = [];
  for (const o of offers) {
    if (d.versions[o.component] === o.version) continue;
    reports.push({
      txn_id: `ev-${process.pid}-${++txn}`,
      component: o.component,
      version: o.version,
      outcome: 'succeeded',
    });
    d.versions[o.component] = o.version;
  }
  if (reports.length) await send(reports);
}

const rollout = (conn: Conn, id: number) => api<RolloutView>(conn, 'GET', `/v1/admin/rollouts/${id}`);

/** Cycles every device until rollout `id` satisfies `ok`. */
function cycleUntil(
  ts: TestServer,
  devs: Dev[],
  signalComponent: string,
  measure: Measure,
  id: number,
  ok: (r: RolloutView) => boolean,
  what: string,
): Promise<RolloutView> {
  return until(
    async () => {
      for (const d of devs) await cycle(ts.conn, d, signalComponent, measure);
      return rollout(ts.conn, id);
    },
    ok,
    60_000,
    what,
  );
}

const plan = (name: string, compare: boolean, select = 'tier=b') => `name: ${name}
first_wave_cap: 100%
report_deadline: 60s
waves:
  - name: canary
    select: ${select}
    size: 20
    bake: 4s
    max_failures: 0
${
  compare
    ? `    compare:
      confidence: 0.98
      min_samples: 10
      signals:
        - name: restarts
          bad: higher
          tolerance: 0.1
          critical: true
`
    : ''
}  - name: rest
    select: ${select}
    size: 100%
`;

describe('evidence gates on a real server', { timeout: 240_000 }, () => {
  let ts: TestServer;

  before(async () => {
    ts = await startTestServer({ limits: { checkinBurst: 100_000, checkinsPerDevicePerMinute: 100_000 } });
    await api(ts.conn, 'POST', '/v1/admin/plans', { source: plan('budget-only', false) });
    await api(ts.conn, 'POST', '/v1/admin/plans', { source: plan('compared', true) });
    for (const c of ['svc-a', 'svc-b', 'app-x', 'os-x', 'app-y', 'os-y']) {
      await release(ts.conn, c, '1');
      await release(ts.conn, c, '2');
    }
  });

  after(async () => {
    await ts?.close();
  });

  // Version 2 of each svc doubles the restarts on every device, and every health check passes.
  const doubledOn =
    (component: string, factor = 2): Measure =>
    (d) =>
      d.base * (d.versions[component] === '2' ? factor : 1);

  it('lets a release that doubles a signal through on a failure budget alone', async () => {
    const devs = await enroll(
      ts.conn,
      Array.from({ length: 40 }, () => ({ tier: 'b' })),
      { 'svc-a': '1' },
    );
    const id = await startRollout(ts.conn, 'svc-a@2', 'budget-only');
    const r = await cycleUntil(
      ts,
      devs,
      'svc-a',
      doubledOn('svc-a'),
      id,
      (x) => x.status !== 'running' && x.status !== 'baking' && x.status !== 'pending',
      'budget-only rollout ends',
    );
    assert.equal(r.status, 'completed', r.state.reason ?? '');
    assert.equal(
      r.waves.reduce((n, w) => n + w.failed, 0),
      0,
    );
    assert.equal(r.exposed, 40);
    assert.deepEqual(devs[0].wanted, [], 'no gate compares svc-a: devices are not asked for its signals');
  });

  it('halts the same release under a comparison gate, with the numbers in the status and the audit log', async () => {
    const devs = await enroll(
      ts.conn,
      Array.from({ length: 40 }, () => ({ tier: 'b' })),
      { 'svc-b': '1' },
    );
    const id = await startRollout(ts.conn, 'svc-b@2', 'compared');
    const r = await cycleUntil(
      ts,
      devs,
      'svc-b',
      doubledOn('svc-b'),
      id,
      (x) => x.status === 'halted' || x.status === 'completed' || x.status === 'awaiting-approval',
      'compared rollout stops',
    );
    assert.equal(r.status, 'halted', r.state.reason ?? '');
    assert.match(r.state.reason ?? '', /wave canary: evidence gate fail: restarts fail \(p=/);
    assert.equal(r.exposed, 20, 'the rest wave never started');
    // A gate compares svc-b: devices are asked for its signals (within the server's 5 s cache of the answer).
    await until(
      async () => {
        await cycle(ts.conn, devs[0], 'svc-b', doubledOn('svc-b'));
        return devs[0].wanted;
      },
      (w) => w?.join() === 'svc-b',
      20_000,
      'svc-b in signals_wanted',
    );
    assert.equal(r.waves[0].failed, 0, 'no device failed a health check');
    const ev = r.evidence.find((e) => e.signal === 'restarts');
    assert.ok(ev, 'the status shows the look');
    assert.equal(ev.signal_verdict, 'fail');
    assert.equal(ev.n_treatment, 20);
    assert.equal(ev.n_control, 20);
    assert.ok(ev.p !== null && ev.p < 0.01, `p=${ev.p}`);
    assert.equal(ev.effect, 1, 'every updated device restarts more than every other');
    const audit = await api<Array<{ action: string; subject: string; detail: Record<string, unknown> }>>(
      ts.conn,
      'GET',
      `/v1/admin/audit?subject=rollout/${id}`,
    );
    const look = audit.find((e) => e.action === 'rollout.evidence-gate');
    assert.ok(look, 'the look is audited');
    const sig = (look.detail.signals as Array<Record<string, unknown>>)[0];
    assert.equal(sig.signal, 'restarts');
    assert.equal(sig.n_treatment, 20);
    assert.equal(typeof sig.p, 'number');
    assert.equal(typeof sig.u, 'number');
    assert.equal(look.detail.status, 'halted');
  });

  /**
   * 60 devices run APP and OS. The os rollout updates the 30 early-ring devices (and bakes a long time); the app
   * rollout's canary (`canary` devices) prefers early-ring devices. Os 2 quadruples the app's restarts; app 2
   * changes nothing. Returns both rollouts' ids and the app rollout once its look was acted on.
   */
  async function concurrent(tag: string, canary: number) {
    const [appC, osC] = [`app-${tag}`, `os-${tag}`];
    const labels = Array.from({ length: 60 }, (_, i) => ({
      tier: 'b',
      ring: i % 2 === 0 ? 'early' : 'late',
    }));
    // One base for every device: without the os devices, app and control devices are alike, certainly.
    const devs = await enroll(ts.conn, labels, { [appC]: '1', [osC]: '1' }, () => 6);
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source: `name: os-${tag}\nfirst_wave_cap: 100%\nwaves:\n  - name: early\n    select: ring=early\n    size: 100%\n    bake: 1h\n`,
    });
    await api(ts.conn, 'POST', '/v1/admin/plans', {
      source: plan(`app-${tag}`, true).replace(
        '    size: 20\n',
        `    size: ${canary}\n    order: [ring=early]\n`,
      ),
    });
    const os = await startRollout(ts.conn, `${osC}@2`, `os-${tag}`);
    const byOs = doubledOn(osC, 4);
    await cycleUntil(ts, devs, appC, byOs, os, (x) => x.status === 'baking', 'os rollout bakes');
    const app = await startRollout(ts.conn, `${appC}@2`, `app-${tag}`);
    const a = await cycleUntil(
      ts,
      devs,
      appC,
      byOs,
      app,
      (x) => x.evidence.length > 0 && x.status !== 'baking',
      'app rollout judged',
    );
    const look = a.evidence.find((e) => e.signal === 'restarts');
    assert.ok(look);
    return { devs, app, os, a, look, appC, byOs };
  }

  it('attributes a rise to the concurrent rollout that explains it and leaves the innocent one running', async () => {
    // 30 of the app's 40 canaries took os 2, none of its control (20 late-ring devices) did. Without the os
    // devices, 10 app devices remain to compare with the 20 of the control: enough to clear it.
    const { devs, app, os, a, look, appC, byOs } = await concurrent('x', 40);
    assert.equal(look.signal_verdict, 'pass', look.reason);
    assert.match(look.attributed_to ?? '', new RegExp(`rollout ${os} \\(os-x 2\\)`));
    assert.match(look.reason, /^explained by rollout \d+ \(os-x 2\); without its devices: /);
    assert.equal(look.n_treatment, 10, 'judged again on the app devices without os 2');
    assert.notEqual(a.status, 'halted', a.state.reason ?? '');
    const done = await cycleUntil(
      ts,
      devs,
      appC,
      byOs,
      app,
      (x) => x.status === 'completed' || x.status === 'halted',
      'app rollout ends',
    );
    assert.equal(done.status, 'completed', done.state.reason ?? '');
    const o = await rollout(ts.conn, os);
    assert.equal(o.status, 'halted');
    assert.match(
      o.state.reason ?? '',
      new RegExp(
        `attributed by rollout ${app}'s evidence gate: restarts is worse on devices running rollout ${os} \\(os-x 2\\) \\(p=`,
      ),
    );
    const audit = await api<Array<{ action: string; detail: Record<string, unknown> }>>(
      ts.conn,
      'GET',
      `/v1/admin/audit?subject=rollout/${os}`,
    );
    const blamed = audit.find((e) => e.action === 'rollout.attributed');
    assert.ok(blamed, 'the attribution is audited on the blamed rollout');
    assert.equal(blamed.detail.by, `rollout/${app}`);
    const cleared = blamed.detail.cleared as Array<{ rollout: string; verdict: string }>;
    assert.ok(
      cleared.some((c) => c.rollout === String(app) && c.verdict === 'pass'),
      JSON.stringify(cleared),
    );
  });

  it('never clears a rollout whose every updated device also took the guilty release', async () => {
    // All 20 app canaries took os 2: the os rollout is still blamed and halted, but without its devices nothing
    // is left to judge the app by, so its look is inconclusive (never a pass) and the app halts without rollback.
    const { app, os, a, look } = await concurrent('y', 20);
    assert.equal(look.signal_verdict, 'inconclusive', look.reason);
    assert.match(look.attributed_to ?? '', /os-y 2/);
    assert.equal(a.status, 'halted', 'inconclusive at the final look');
    assert.match(a.state.reason ?? '', /evidence gate inconclusive/);
    assert.equal(a.waves[0].reverted, 0);
    assert.equal((await rollout(ts.conn, os)).status, 'halted');
    assert.ok(app > 0);
  });
});
