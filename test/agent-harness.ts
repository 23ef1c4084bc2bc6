// Shared harness for the agent tests: a real server with releases of sensor-content, and devices with a
// pre-installed release whose real agent processes are started, paused, SIGKILLed and restarted.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import type { ComponentJournal, Report } from '../src/agent/journal.ts';
import { api } from '../src/cli/client.ts';
import { importRelease } from '../src/cli/commands/release.ts';
import { BIN, prepareDevice, type SpawnedDevice, startAgent, writeContent } from '../src/demo/fleet.ts';
import { killProcess, spawnGroup, track } from './helpers/processes.ts';
import { type TestServer, until } from './helpers/server.ts';

// Ceiling for waits on a real agent: generous, because a loaded machine is slow, and a wait ends at its event.
const AGENT_WAIT_MS = 120_000;

export const OLD = '1.0.0';
export const GOOD = '1.1.0';
export const BAD = '1.2.0'; // threads=0: the service crashes on start
export const THREADS: Record<string, number> = { [OLD]: 4, [GOOD]: 8, [BAD]: 0, '1.3.0': 6 };

/** Imports and approves the test releases; returns the folder holding each version's content. */
export async function publishReleases(ts: TestServer, versions = [OLD, GOOD, BAD]): Promise<string> {
  const content = join(ts.dir, 'content');
  for (const v of versions) {
    await importRelease(ts.conn, 'sensor-content', v, [writeContent(join(content, v), v, THREADS[v])]);
    await api(ts.conn, 'POST', `/v1/admin/releases/sensor-content@${v}/approve`, {});
  }
  return content;
}

export async function enrollToken(ts: TestServer, uses: number): Promise<string> {
  return (await api<{ token: string }>(ts.conn, 'POST', '/v1/admin/enroll-tokens', { uses })).token;
}

/** A device whose agent config comes from prepareDevice, already running OLD (installed before Ringfence). */
export function seededDevice(
  ts: TestServer,
  content: string,
  name: string,
  token: string,
  opts: { probationMs?: number; pollMs?: number; edit?: (cfg: Record<string, unknown>) => void } = {},
): SpawnedDevice {
  const d = prepareDevice(join(ts.dir, 'devices'), { name, labels: { dev: name } }, ts.url, token, {
    pollMs: opts.pollMs ?? 250,
    probationMs: opts.probationMs ?? 600,
  });
  if (opts.edit) {
    const cfg = parse(readFileSync(d.config, 'utf8')) as Record<string, unknown>;
    opts.edit(cfg);
    writeFileSyncText(d.config, stringify(cfg));
  }
  const rel = join(d.appDir, 'releases', OLD);
  mkdirSync(join(d.appDir, 'releases'), { recursive: true });
  spawnSync('cp', ['-r', join(content, OLD), rel]);
  symlinkSync(join('releases', OLD), join(d.appDir, 'current'));
  mkdirSync(join(d.dir, 'state'), { recursive: true });
  const j: ComponentJournal = {
    component: 'sensor-content',
    current: OLD,
    previous: null,
    quarantined: [],
    hold: false,
    pin: null,
    txn: null,
    lastHealth: null,
  };
  writeFileSyncText(join(d.dir, 'state', 'component-sensor-content.json'), JSON.stringify(j));
  return d;
}

function writeFileSyncText(path: string, text: string) {
  writeFileSync(path, text);
}

export function journalOf(d: SpawnedDevice): ComponentJournal {
  return JSON.parse(readFileSync(join(d.dir, 'state', 'component-sensor-content.json'), 'utf8'));
}

/** Starts the agent, optionally paused at a crash point; clears a stale paused-at marker first. */
export function start(d: SpawnedDevice, pauseAt?: string): ChildProcess {
  rmSync(join(d.dir, 'state', 'paused-at'), { force: true });
  return track(startAgent(d, pauseAt ? { RINGFENCE_TEST_PAUSE_AT: pauseAt } : {}));
}

/** SIGKILLs the device's agent (the machine dies) and waits until it has exited. */
export async function kill(d: SpawnedDevice): Promise<void> {
  await killProcess(d.proc);
}

export async function waitEnrolled(ts: TestServer, d: SpawnedDevice): Promise<string> {
  const dev = await until(
    () => api<{ id: string }>(ts.conn, 'GET', `/v1/admin/devices/${d.name}`).catch(() => null),
    (v) => !!v,
    AGENT_WAIT_MS,
    `${d.name} enrolled`,
  );
  return dev!.id;
}

export async function pin(ts: TestServer, d: SpawnedDevice, version: string): Promise<void> {
  await api(ts.conn, 'POST', '/v1/admin/fleet/pin', {
    selector: `dev=${d.name}`,
    release: `sensor-content@${version}`,
  });
}

/** The release version the device's `current` symlink points at. */
export function activeRelease(d: SpawnedDevice): string | undefined {
  return readlinkSync(join(d.appDir, 'current')).split('/').pop();
}

/** Waits until the agent's journal has `version` current and no open transaction. */
export async function onVersion(
  d: SpawnedDevice,
  version: string,
  ms = AGENT_WAIT_MS,
  what = `${d.name} on ${version}`,
): Promise<ComponentJournal> {
  return until(
    async () => journalOf(d),
    (j) => j.current === version && j.txn === null,
    ms,
    what,
  );
}

/** The device's refusals of `version` received since `since`, each with the refusal class from its detail. */
export async function refusals(ts: TestServer, deviceId: string, version: string, since = 0) {
  const rows = await ts.srv.ctx.store.db
    .selectFrom('reports')
    .selectAll()
    .where('device_id', '=', deviceId)
    .where('version', '=', version)
    .where('outcome', '=', 'refused')
    .where('received_at', '>=', since)
    .execute();
  return rows.map((r) => ({ ...r, class: (JSON.parse(r.detail) as { class?: string }).class }));
}

export async function pausedAt(d: SpawnedDevice, point: string): Promise<void> {
  const f = join(d.dir, 'state', 'paused-at');
  await until(
    async () => (existsSync(f) ? readFileSync(f, 'utf8') : null),
    (v) => v === point,
    AGENT_WAIT_MS,
    `${d.name} paused at ${point}`,
  );
}

/**
 * The crash-safety invariant: `current` points at a complete release folder — one of the known versions,
 * byte for byte — never a missing, partial or mixed one.
 */
export function assertWhole(d: SpawnedDevice, content: string, allowed: string[]): string {
  const link = readlinkSync(join(d.appDir, 'current'));
  const v = link.split('/').pop()!;
  assert.ok(allowed.includes(v), `${d.name}: current -> ${link}, expected one of ${allowed}`);
  const dir = join(d.appDir, 'releases', v);
  const want = readdirSync(join(content, v)).sort();
  assert.deepEqual(readdirSync(dir).sort(), want, `${d.name}: files of release ${v}`);
  for (const f of want)
    assert.ok(
      readFileSync(join(dir, f)).equals(readFileSync(join(content, v, f))),
      `${d.name}: ${v}/${f} differs from the release`,
    );
  return v;
}

export async function report(ts: TestServer, deviceId: string, version: string) {
  return ts.srv.ctx.store.db
    .selectFrom('reports')
    .selectAll()
    .where('device_id', '=', deviceId)
    .where('version', '=', version)
    .execute();
}

/** Waits until the agent has no open transaction and the server holds its final report for `version`. */
export async function settled(
  ts: TestServer,
  d: SpawnedDevice,
  deviceId: string,
  version: string,
  ms = AGENT_WAIT_MS,
) {
  await until(
    async () => {
      const j = journalOf(d);
      const r = await report(ts, deviceId, version);
      return { txn: j.txn?.phase ?? null, reports: r.map((x) => x.outcome) };
    },
    (v) => v.txn === null && v.reports.some((o) => o === 'succeeded' || o === 'rolled-back'),
    ms,
    `${d.name} settled on a result for ${version}`,
  );
  return journalOf(d);
}

export function ringfence(args: string[]): { code: number; out: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: AGENT_WAIT_MS });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

// ---- A fake Ringfence server (node:http or node:https) for agents talking to a hostile or TLS-only peer ----

/** What a fake server saw and what it answers; `desired` is sent as is in every check-in answer. */
export interface FakeServer {
  url: string;
  /** Every request, in order: method and path. */
  requests: Array<{ method: string; path: string }>;
  checkins: number;
  /** Every report the agent delivered (acknowledged at once). */
  reports: Report[];
  desired: unknown[];
  close(): Promise<void>;
}

/**
 * Starts a fake server on 127.0.0.1: /v1/enroll, /v1/checkin (records and acknowledges reports, answers
 * `desired`), /v1/tuf/* from `tufDir` when given, /v1/blobs/<sha256> from `blobs`; anything else 404.
 * With `tls` it is node:https with that key and certificate.
 */
export async function startFakeServer(
  opts: {
    tls?: { key: Buffer; cert: Buffer };
    tufDir?: string;
    /** Blobs by sha256: bytes, or a function that writes the response itself (a hostile stream). */
    blobs?: Map<string, Buffer | ((res: ServerResponse) => void)>;
  } = {},
): Promise<FakeServer> {
  const state = { requests: [], checkins: 0, reports: [], desired: [] } as Pick<
    FakeServer,
    'requests' | 'checkins' | 'reports' | 'desired'
  >;
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    state.requests.push({ method: req.method ?? 'GET', path });
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const send = (status: number, body: unknown) => {
        const b = Buffer.from(JSON.stringify(body));
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': b.length }).end(b);
      };
      if (req.method === 'POST' && path === '/v1/enroll')
        return send(200, { device_id: 'dev-1', device_token: 'tok-1' });
      if (req.method === 'POST' && path === '/v1/checkin') {
        if (req.headers.authorization !== 'Bearer tok-1')
          return send(401, { message: 'unknown device token' });
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { reports?: Report[] };
        state.checkins++;
        for (const r of body.reports ?? []) state.reports.push(r);
        return send(200, {
          poll_seconds: 1,
          acked: (body.reports ?? []).map((r) => r.txn_id),
          desired: state.desired,
        });
      }
      const tuf = path.match(/^\/v1\/tuf\/([A-Za-z0-9._-]+)$/);
      if (req.method === 'GET' && tuf && opts.tufDir && existsSync(join(opts.tufDir, tuf[1]))) {
        const b = readFileSync(join(opts.tufDir, tuf[1]));
        return res.writeHead(200, { 'content-length': b.length }).end(b);
      }
      const blob = opts.blobs?.get(path.replace(/^\/v1\/blobs\//, ''));
      if (req.method === 'GET' && path.startsWith('/v1/blobs/') && typeof blob === 'function')
        return blob(res);
      if (req.method === 'GET' && path.startsWith('/v1/blobs/') && blob)
        return res.writeHead(200, { 'content-length': blob.length }).end(blob);
      send(404, { message: 'not found' });
    });
  };
  const srv = opts.tls
    ? createHttpsServer({ key: opts.tls.key, cert: opts.tls.cert }, handler)
    : createHttpServer(handler);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  return Object.assign(state, {
    url: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  }) as FakeServer;
}

/** Spawns a real agent process (`ringfence agent --config FILE`) logging to `log`; stop it with stopProcess. */
export function spawnAgent(config: string, log: string, env: Record<string, string> = {}): ChildProcess {
  const fd = openSync(log, 'a');
  try {
    return spawnGroup(process.execPath, [BIN, 'agent', '--config', config], {
      stdio: ['ignore', fd, fd],
      env: { ...process.env, RINGFENCE_LOG_LEVEL: 'info', ...env },
    });
  } finally {
    closeSync(fd);
  }
}

/** SIGKILLs a process (and its process group, if it leads one) and waits for it to exit. */
export async function stopProcess(p: ChildProcess | null | undefined): Promise<void> {
  await killProcess(p);
}
