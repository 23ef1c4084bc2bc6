// `ringfence demo`: a live, self-contained story on the embedded default. A server in a temporary folder,
// ~30 real agent processes, a good release through three waves, then a bad release (the July 2024 case)
// that must halt after the first wave with every exposed device back on the previous release.
import { existsSync, mkdtempSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { api, type Conn } from '../cli/client.ts';
import { importRelease } from '../cli/commands/release.ts';
import { parsePlan } from '../engine/plan.ts';
import { createServer } from '../server/app.ts';
import { devicesWithoutVerifiedTrust } from '../server/db/device-components.ts';
import type { DeviceSummary } from '../server/routes/admin-fleet.ts';
import type { RolloutView } from '../server/routes/admin-rollouts.ts';
import { parseFault } from '../sim/faults.ts';
import { fleetFromLabels } from '../sim/fleet.ts';
import { rehearse } from '../sim/rehearsal.ts';
import { TufRepository } from '../trust/signer/tuf-repository.ts';
import { prepareDevice, type SpawnedDevice, startAgent, stopAgents, writeContent } from './fleet.ts';

export const DEMO_PLAN = `name: demo-waves
description: canary ring first, then 30 % of the rest, then everyone
on_failure: halt
report_deadline: 60s
# Three canaries in a lab fleet of 12 to 30 devices: up to a quarter of it (a real fleet keeps the 5 % default).
first_wave_cap: 25%
waves:
  - name: canary
    select: ring=canary
    size: 3
    bake: 2s
    max_failures: 0
  - name: early
    select: "!ring"
    size: 30%
    bake: 2s
    max_failures: 0
  - name: broad
    size: 100%
    max_failures: 1
`;

export interface DemoResult {
  fleet: number;
  good: { exposed: number; succeeded: number; status: string };
  bad: {
    exposed: number;
    rolled_back: number;
    halted: boolean;
    halted_after_wave: string | null;
    status: string;
  };
  story_held: boolean;
  problems: string[];
  seconds: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs the demo; `say` receives the human timeline. */
export async function runDemo(
  opts: { devices?: number; keep?: boolean; say?: (line: string) => void } = {},
): Promise<DemoResult> {
  const started = Date.now();
  const say = opts.say ?? (() => {});
  const t = () => `[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s]`;
  const n = opts.devices ?? 30;
  // Three canaries must stay within the plan's first-wave cap (25 %), and the demo is bounded in processes.
  if (!Number.isInteger(n) || n < 12 || n > 200)
    throw new Error('--devices must be a whole number from 12 to 200');
  const root = mkdtempSync(join(tmpdir(), 'ringfence-demo-'));
  const problems: string[] = [];
  // `keys init` before the server starts: agents pin the organisation's root at enrollment and verify every
  // release with TUF (approval signs it), so the demo runs the full signed path.
  const keys = TufRepository.init(join(root, 'server'));
  const srv = await createServer({
    dataDir: join(root, 'server'),
    logger: pino({ level: 'silent' }),
    pollSeconds: 1,
    tickMs: 100,
  });
  const devices: SpawnedDevice[] = [];
  try {
    const address = await srv.app.listen({ host: '127.0.0.1', port: 0 });
    const conn: Conn = { server: address, token: srv.newAdminToken! };
    say(`${t()} patch server up at ${address} (SQLite + blob folder in ${root})`);
    say(`${t()} organisation TUF keys created (root v${keys.root.signed.version}); approvals are signed`);
    srv.ctx.driver.onStep((id, out) => {
      for (const tr of out.transitions) say(`${t()} rollout ${id}: ${tr.why}`);
    });

    const tok = await api<{ token: string }>(conn, 'POST', '/v1/admin/enroll-tokens', { uses: n });
    const tiers = ['A', 'B', 'C'];
    for (let i = 0; i < n; i++) {
      const labels: Record<string, string> = {
        env: 'prod',
        tier: tiers[i % 3],
        role: i % 4 === 0 ? 'primary' : 'replica',
        site: `site-${(i % 5) + 1}`,
      };
      if (i < 3) labels.ring = 'canary';
      devices.push(
        prepareDevice(
          join(root, 'devices'),
          { name: `device-${String(i + 1).padStart(2, '0')}`, labels },
          address,
          tok.token,
        ),
      );
    }
    for (const d of devices) startAgent(d, { RINGFENCE_LOG_LEVEL: 'warn' });
    say(`${t()} started ${n} agent processes (3 in the canary ring)`);
    for (let i = 0; ; i++) {
      const list = await api<DeviceSummary[]>(conn, 'GET', '/v1/admin/devices');
      if (list.length >= n) break;
      if (i > 600) throw new Error(`only ${list.length} of ${n} agents enrolled in time`);
      await sleep(100);
    }
    say(`${t()} all ${n} devices enrolled`);

    await importRelease(
      conn,
      'sensor-content',
      '1.0.0',
      [writeContent(join(root, 'content', '1.0.0'), '1.0.0', 4)],
      { vendor: 'demo' },
    );
    await importRelease(
      conn,
      'sensor-content',
      '1.1.0',
      [writeContent(join(root, 'content', '1.1.0'), '1.1.0', 0)],
      { vendor: 'demo' },
    );
    await api(conn, 'POST', '/v1/admin/plans', { source: DEMO_PLAN, file: 'demo-plan.yaml' });
    // Four eyes: the admin imported the releases, so a second operator (an approver) approves them.
    const reviewer = await api<{ token: string }>(conn, 'POST', '/v1/admin/operators', {
      name: 'reviewer',
      role: 'approver',
    });
    const asReviewer = { ...conn, token: reviewer.token };
    for (const v of ['1.0.0', '1.1.0'])
      await api(asReviewer, 'POST', `/v1/admin/releases/sensor-content@${v}/approve`, {});
    say(
      `${t()} admin imported sensor-content@1.0.0 (good) and @1.1.0 (bad: crashes the service on start); ` +
        'operator "reviewer" (role approver) approved both: four eyes',
    );

    const waitFor = async (id: number, done: (r: RolloutView) => boolean, limitMs: number) => {
      const end = Date.now() + limitMs;
      for (;;) {
        const r = await api<RolloutView>(conn, 'GET', `/v1/admin/rollouts/${id}`);
        if (done(r)) return r;
        if (Date.now() > end) return r;
        await sleep(200);
      }
    };

    say(`${t()} --- good release: sensor-content@1.0.0 through canary → early (30%) → broad ---`);
    const good = await api<RolloutView>(conn, 'POST', '/v1/admin/rollouts', {
      release: 'sensor-content@1.0.0',
      plan: 'demo-waves',
    });
    const goodEnd = await waitFor(
      good.id,
      (r) => ['completed', 'halted', 'aborted', 'rolled-back'].includes(r.status),
      60_000,
    );
    const goodSucceeded = goodEnd.waves.reduce((s, w) => s + w.succeeded, 0);
    if (goodEnd.status !== 'completed')
      problems.push(`good rollout ended ${goodEnd.status}: ${goodEnd.state.reason}`);
    if (goodSucceeded !== n) problems.push(`good rollout: ${goodSucceeded} of ${n} succeeded`);

    // Trust, but verify the plan too: rehearse the bad case on a digital twin of this fleet before it happens.
    const twin = rehearse({
      plan: parsePlan(DEMO_PLAN, 'demo-plan.yaml'),
      fleet: fleetFromLabels(devices.map((d) => d.labels)),
      faults: [parseFault('crash:100%')],
      seed: 'demo',
    });
    say(
      `${t()} rehearsal (digital twin, virtual time): a release that crashes every device would reach ${twin.exposed} of ${n} devices and halt after wave "${twin.halted_at_wave}"`,
    );
    say(`${t()}   at scale: ringfence rehearse PLAN.yaml --fleet 100000 --fault crash:100% --report DIR`);
    say(`${t()} --- bad release: sensor-content@1.1.0, same plan ---`);
    const bad = await api<RolloutView>(conn, 'POST', '/v1/admin/rollouts', {
      release: 'sensor-content@1.1.0',
      plan: 'demo-waves',
    });
    let badEnd = await waitFor(
      bad.id,
      (r) => ['completed', 'halted', 'aborted', 'rolled-back'].includes(r.status),
      60_000,
    );
    // Wait for every exposed device's own rollback report.
    badEnd = await waitFor(
      bad.id,
      (r) => r.waves.reduce((s, w) => s + w.offered - w.failed, 0) === 0,
      30_000,
    );
    const exposed = badEnd.exposed;
    // Check the devices themselves: what runs on disk, and who ever staged the bad release.
    let onPrevious = 0;
    const touched: string[] = [];
    for (const d of devices) {
      let active: string | null = null;
      try {
        active = readlinkSync(join(d.appDir, 'current')).split('/').pop() ?? null;
      } catch {}
      const list = await api<DeviceSummary>(conn, 'GET', `/v1/admin/devices/${d.name}`);
      const quarantined = list.components.find((c) => c.name === 'sensor-content')?.quarantined ?? [];
      if (quarantined.includes('1.1.0')) {
        touched.push(d.name);
        if (active === '1.0.0') onPrevious++;
      }
      if (active !== '1.0.0') problems.push(`${d.name} runs ${active ?? 'nothing'}, not 1.0.0`);
      if (
        !d.labels.ring &&
        (quarantined.includes('1.1.0') || existsSync(join(d.appDir, 'releases', '1.1.0')))
      ) {
        problems.push(`${d.name} is outside the first wave but received 1.1.0`);
      }
    }
    // Every device must have pinned the root and verified what it installed (no sha256-only fallback).
    const unverified = await devicesWithoutVerifiedTrust(srv.ctx.store.db);
    if (unverified.length) problems.push(`${unverified.length} devices did not verify releases with TUF`);
    const haltedAfter =
      badEnd.state.haltedAtWave !== null ? badEnd.waves[badEnd.state.haltedAtWave].name : null;
    if (badEnd.status !== 'halted') problems.push(`bad rollout ended ${badEnd.status}, not halted`);
    if (haltedAfter !== 'canary') problems.push(`bad rollout halted after ${haltedAfter}, not canary`);
    if (exposed !== touched.length || onPrevious !== exposed) {
      problems.push(
        `bad release exposed ${exposed}, rolled back on ${onPrevious}, seen on ${touched.length} devices`,
      );
    }
    if (exposed > twin.exposed) problems.push(`exposure ${exposed} exceeded the rehearsed ${twin.exposed}`);
    say(
      `${t()} bad release halted after wave "${haltedAfter}": exposed ${exposed} of ${n} (rehearsal predicted ${twin.exposed}), rolled back on their own: ${onPrevious}`,
    );
    return {
      fleet: n,
      good: { exposed: goodEnd.exposed, succeeded: goodSucceeded, status: goodEnd.status },
      bad: {
        exposed,
        rolled_back: onPrevious,
        halted: badEnd.status === 'halted',
        halted_after_wave: haltedAfter,
        status: badEnd.status,
      },
      story_held: problems.length === 0,
      problems,
      seconds: Math.round((Date.now() - started) / 100) / 10,
    };
  } finally {
    await stopAgents(devices);
    await srv.close();
    if (!opts.keep) rmSync(root, { recursive: true, force: true });
    else say(`kept ${root}`);
  }
}
