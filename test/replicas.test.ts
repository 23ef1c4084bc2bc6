// Three server processes on one PostgreSQL with one shared data folder (blobs, TUF repository): they start together
// on a new database; a wait held on one replica wakes on a change made on another (LISTEN/NOTIFY); approvals on
// different replicas at the same moment never sign two targets files with one version (advisory lock); and real
// agents behind a round-robin proxy finish a rollout with exactly one report per device while one replica is
// killed with SIGKILL mid-rollout. RF_KEEP=1 keeps the folder with the replicas' and agents' logs.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { api, type Conn } from '../src/cli/client.ts';
import { prepareDevice, type SpawnedDevice, startAgent, stopAgents } from '../src/demo/fleet.ts';
import type { RolloutView } from '../src/server/routes/admin-rollouts.ts';
import type { DeviceHistoryPage } from '../src/server/services/history-views.ts';
import { importGoodAndBadContent } from './helpers/agent-fleet.ts';
import { type PgCluster, pgBinDir, startPostgres } from './helpers/postgres.ts';
import { guardProcesses, killProcess, spawnGroup, track } from './helpers/processes.ts';
import { enrollDevices } from './helpers/protocol-device.ts';
import { until } from './helpers/server.ts';

const BIN = join(import.meta.dirname, '..', 'bin', 'ringfence.js');
const TOKEN = `adm-${randomBytes(24).toString('hex')}`;

interface Replica {
  proc: ChildProcess;
  url: string;
  conn: Conn;
}

/** Starts `ringfence server` on the shared folder and database; resolves with its address once it listens. */
function startReplica(data: string, pg: PgCluster): Promise<Replica> {
  const proc = spawnGroup(
    process.execPath,
    [BIN, 'server', '--data', data, '--database', pg.url, '--port', '0', '--poll', '300'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        RINGFENCE_INITIAL_ADMIN_TOKEN: TOKEN,
        RINGFENCE_LOG_LEVEL: process.env.RF_KEEP ? 'debug' : 'info',
      },
    },
  );
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    proc.stderr?.on('data', (b: Buffer) => {
      if (process.env.RF_KEEP) appendFileSync(join(data, '..', `replica-${proc.pid}.err`), b);
      err = (err + b.toString()).slice(-4000);
    });
    proc.stdout?.on('data', (b: Buffer) => {
      if (process.env.RF_KEEP) appendFileSync(join(data, '..', `replica-${proc.pid}.log`), b);
      out += b.toString();
      const m = /"address":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(out);
      if (m) {
        out = '';
        resolve({ proc, url: m[1], conn: { server: m[1], token: TOKEN } });
      } else out = out.slice(-4000);
    });
    proc.once('exit', (code) => reject(new Error(`replica exited with ${code} before listening: ${err}`)));
  });
}

/**
 * A TCP load balancer on loopback: each new connection goes to the next replica in turn, skipping the ones that
 * refuse it (a killed replica), as a real balancer with health checks would.
 */
async function balancer(backends: () => string[]): Promise<{ url: string; server: Server }> {
  let next = 0;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    sockets.add(client);
    client.once('close', () => sockets.delete(client));
    client.pause();
    const urls = backends();
    const attempt = (tries: number) => {
      if (tries >= urls.length) return client.destroy();
      const u = new URL(urls[next++ % urls.length]);
      const up = createConnection({ host: u.hostname, port: Number(u.port) });
      up.once('error', () => {
        if (!up.readyState || up.readyState === 'opening') attempt(tries + 1);
        else client.destroy();
      });
      up.once('connect', () => {
        sockets.add(up);
        up.once('close', () => {
          sockets.delete(up);
          client.destroy();
        });
        client.once('close', () => up.destroy());
        client.pipe(up).pipe(client);
        client.resume();
      });
    };
    attempt(0);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  server.once('close', () => {
    for (const s of sockets) s.destroy();
  });
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, server };
}

describe('replicas on one PostgreSQL', {
  skip: !pgBinDir() && 'PostgreSQL is not installed',
  timeout: 900_000,
}, () => {
  let pg: PgCluster;
  let dir: string;
  let data: string;
  const replicas: Replica[] = [];
  const agents: SpawnedDevice[] = [];

  before(async () => {
    pg = await startPostgres();
    dir = mkdtempSync(join(tmpdir(), 'rf-replicas-'));
    data = join(dir, 'server');
    execFileSync(process.execPath, [BIN, 'keys', 'init', '--data', data], { stdio: 'pipe' });
    // One operator (the bootstrap admin) imports and approves here: replicas, not four eyes, are under test.
    writeFileSync(join(data, 'server.yaml'), 'governance:\n  four_eyes: false\n', { mode: 0o600 });
  });

  after(async () => {
    await stopAgents(agents);
    for (const r of replicas) await killProcess(r.proc);
    pg?.stop();
    if (dir && !process.env.RF_KEEP) rmSync(dir, { recursive: true, force: true });
  });

  it('three replicas start together on a new database and share one admin token', async () => {
    replicas.push(...(await Promise.all([0, 1, 2].map(() => startReplica(data, pg)))));
    for (const r of replicas) assert.ok(Array.isArray(await api(r.conn, 'GET', '/v1/admin/releases')));
  });

  it('a wait held on one replica wakes when another replica changes what the device is told', async () => {
    const [a, b, c] = replicas;
    const [d] = await enrollDevices(a.conn, [{ grp: 'w' }]);
    const res = await fetch(new URL('/v1/checkin', a.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${d.token}` },
      body: JSON.stringify({ components: [{ name: 'wk', version: null }] }),
    });
    const { desired_tag: tag } = (await res.json()) as { desired_tag: string };
    // Held on C (25 s, the server's maximum); B holds the device; A's answer at hold time would be `false`.
    const held = fetch(new URL('/v1/wait', c.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${d.token}` },
      body: JSON.stringify({ tag, seconds: 25 }),
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as { changed: boolean } }));
    await until(
      async () =>
        (await (await fetch(new URL('/metrics', c.url))).text()).match(/^ringfence_waits_held (\d+)/m)?.[1],
      (n) => n === '1',
      60_000,
      'the wait held on replica C',
    );
    await api(b.conn, 'POST', '/v1/admin/fleet/hold', { selector: `grp=w` });
    const w = await held;
    assert.equal(w.status, 200);
    assert.equal(w.body.changed, true, 'the hold made on B woke the wait held on C');
  });

  it('approvals on different replicas at once sign every release into one consistent targets chain', async () => {
    const versions = ['1', '2', '3', '4', '5', '6', '7', '8', '9'];
    for (const v of versions) {
      const r = replicas[Number(v) % 3];
      const up = await fetch(new URL('/v1/admin/blobs', r.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/octet-stream' },
        body: `apr ${v}\n`,
      });
      const blob = (await up.json()) as { sha256: string; length: number };
      await api(r.conn, 'POST', '/v1/admin/releases', {
        component: 'apr',
        version: v,
        artifacts: [{ name: 'c.txt', ...blob }],
      });
    }
    await Promise.all(
      versions.map((v, i) => api(replicas[i % 3].conn, 'POST', `/v1/admin/releases/apr@${v}/approve`, {})),
    );
    // What a device reads: timestamp → snapshot → targets, from any replica.
    const meta = async (name: string) =>
      (await (await fetch(new URL(`/v1/tuf/${name}`, replicas[1].url))).json()) as {
        signed: Record<string, unknown>;
      };
    const ts = await meta('timestamp.json');
    const snapV = (ts.signed.meta as Record<string, { version: number }>)['snapshot.json'].version;
    const snap = await meta(`${snapV}.snapshot.json`);
    const tV = (snap.signed.meta as Record<string, { version: number }>)['targets.json'].version;
    const targets = await meta(`${tV}.targets.json`);
    const paths = Object.keys(targets.signed.targets as object).filter((p) => p.includes('apr'));
    assert.equal(paths.length, versions.length, `every approved release is signed: ${paths.join(', ')}`);
    // Each approval signed its own targets version: two replicas never both wrote version N (the second rename
    // would have silently replaced the first).
    const audit = await api<
      Array<{ action: string; subject: string; detail: { tuf_targets_version?: number } }>
    >(replicas[2].conn, 'GET', '/v1/admin/audit?limit=1000');
    const signed = audit
      .filter((e) => e.action === 'release.approved' && e.subject.startsWith('release/apr@'))
      .map((e) => e.detail.tuf_targets_version);
    assert.equal(signed.length, versions.length);
    assert.equal(new Set(signed).size, versions.length, `targets versions ${signed.join(', ')}`);
    assert.ok(signed.every((v) => typeof v === 'number' && v <= tV));
  });

  it('agents spread over the replicas finish a rollout with one replica killed mid-way, one report each', async () => {
    const [a, b] = replicas;
    let live = replicas.map((r) => r.url);
    const lb = await balancer(() => live);
    try {
      const tok = await api<{ token: string }>(a.conn, 'POST', '/v1/admin/enroll-tokens', { uses: 6 });
      for (let i = 0; i < 6; i++) {
        const d = prepareDevice(
          join(dir, 'devices'),
          { name: `rp-${i}`, labels: { grp: 'rp' } },
          lb.url,
          tok.token,
          {
            pollMs: 300_000,
            probationMs: 300,
          },
        );
        writeFileSync(d.config, stringify({ ...parse(readFileSync(d.config, 'utf8')), wake: 'long-poll' }));
        agents.push(d);
        track(startAgent(d, { RINGFENCE_LOG_LEVEL: process.env.RF_KEEP ? 'info' : 'warn' }));
      }
      await until(
        () => api<Array<{ name: string; components: unknown[] }>>(a.conn, 'GET', '/v1/admin/devices'),
        (l) => l.filter((d) => d.name.startsWith('rp-') && d.components.length > 0).length === 6,
        120_000,
        'six agents checked in',
      );
      await importGoodAndBadContent({ conn: a.conn, dir });
      await api(a.conn, 'POST', '/v1/admin/releases/sensor-content@1.0.0/approve', {});
      await api(a.conn, 'POST', '/v1/admin/plans', {
        // The canary bakes 15 s: replica B dies in that time, so the rest is offered with B gone.
        source:
          'name: rp\nfirst_wave_cap: 100%\nwaves:\n  - name: canary\n    size: 1\n    select: grp=rp\n    bake: 15s\n' +
          '  - name: rest\n    size: 100%\n    select: grp=rp\n',
      });
      const r = await api<RolloutView>(a.conn, 'POST', '/v1/admin/rollouts', {
        release: 'sensor-content@1.0.0',
        plan: 'rp',
      });
      // Mid-rollout: once the canary succeeded, replica B dies with whatever it held.
      await until(
        () => api<RolloutView>(a.conn, 'GET', `/v1/admin/rollouts/${r.id}`),
        (v) => v.waves[0].succeeded === 1 || v.status !== 'running',
        240_000,
        'the canary',
      );
      // B holds some agents' waits (the balancer spreads connections): those are cut by the kill.
      await until(
        async () =>
          (await (await fetch(new URL('/metrics', b.url))).text()).match(/^ringfence_waits_held (\d+)/m)?.[1],
        (n) => Number(n) >= 1,
        60_000,
        'waits held on replica B',
      );
      live = live.filter((u) => u !== b.url);
      await killProcess(b.proc);
      const end = await until(
        () => api<RolloutView>(a.conn, 'GET', `/v1/admin/rollouts/${r.id}`),
        (v) => ['completed', 'halted', 'aborted', 'rolled-back'].includes(v.status),
        // Agents poll every 300 s (never before 240 s, with jitter): only wake-ups, and checking in again after
        // the kill cut their waits on B, finish it before that.
        200_000,
        'the rollout to end without replica B',
      );
      assert.equal(end.status, 'completed');
      const succeeded = end.waves.reduce((s, w) => s + w.succeeded, 0);
      assert.equal(succeeded, 6, 'each device counted once');
      for (const d of agents) {
        assert.equal(readlinkSync(join(d.appDir, 'current')).split('/').pop(), '1.0.0', d.name);
        const h = await api<DeviceHistoryPage>(a.conn, 'GET', `/v1/admin/devices/${d.name}/history`);
        const mine = h.transactions.filter((t) => t.version === '1.0.0');
        assert.equal(mine.length, 1, `${d.name}: exactly one report of 1.0.0`);
      }
    } finally {
      lb.server.close();
    }
  });
});

guardProcesses();
