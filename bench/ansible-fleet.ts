// The Ringfence side of bench/ansible.ts: a real `ringfence server` process and N real agent processes from the
// shipped build (dist/ringfence-agent.mjs on plain node), each its own host folder, and timed rollouts. Every
// process is spawned in its own process group and killed (with its group) by killAll, which also runs on exit
// and on SIGINT/SIGTERM, so no agent outlives the bench.
import { type ChildProcess, spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import { stringify } from 'yaml';
import { AGENT_BUNDLE, buildAgent } from '../scripts/build-agent.ts';
import { api, type Conn } from '../src/cli/client.ts';
import { importRelease } from '../src/cli/commands/release.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin', 'ringfence.js');
// A strong token, as the server requires of an initial admin token.
const ADMIN = 'rfadm_bench_ansible_0123456789abcdefghijklmnopqrstuvwxyz';
export const COMPONENT = 'app';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- processes: one group each, all killed at the end whatever happens ----
const groups = new Set<ChildProcess>();

/** spawn() in a new process group, registered for killAll. */
export function spawnGroup(
  cmd: string,
  args: string[],
  opts: Parameters<typeof spawn>[2] = {},
): ChildProcess {
  const p = spawn(cmd, args, { ...opts, detached: true });
  groups.add(p);
  p.once('exit', () => groups.delete(p));
  return p;
}

/** SIGKILLs every registered process group (synchronously: safe in an exit handler). */
export function killAll(): void {
  for (const p of groups)
    try {
      if (p.pid) process.kill(-p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
}

/** SIGKILLs one group and waits until its leader has exited. */
export async function killGroup(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise<void>((r) => p.once('exit', () => r()));
  try {
    process.kill(-p.pid!, 'SIGKILL');
  } catch {
    return;
  }
  await gone;
}

process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => {
    killAll();
    process.exit(130);
  });

/** Polls fn every `everyMs` until it returns a value, or throws after `ms` naming `what`. */
export async function waitFor<T>(
  fn: () => Promise<T | undefined> | T | undefined,
  ms: number,
  what: string,
  everyMs = 100,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${Math.round(ms / 1000)} s: ${what}`);
    await sleep(everyMs);
  }
}

// ---- the release both tools roll out ----

/**
 * A release folder: a config, a 64 KiB payload and the health script. The script runs with the host's app
 * folder as working directory (the agent runs checks in the component folder; the playbook uses chdir), notes
 * that this host ran this release in ran.log (the exposure count), and exits 0 for a good release, 1 for a bad.
 */
export function writeRelease(dir: string, version: string, good: boolean): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'release.conf'), `version=${version}\nworkers=4\n`);
  writeFileSync(join(dir, 'payload.dat'), `content of ${version}\n`.repeat(4096).slice(0, 65_536));
  writeFileSync(
    join(dir, 'health.sh'),
    `#!/bin/sh\n# health check of release ${version}\necho ${version} >> ran.log\n` +
      (good ? 'grep -q "^workers=4$" current/release.conf\n' : 'echo "service fails to start" >&2\nexit 1\n'),
    { mode: 0o755 },
  );
  return dir;
}

/** The release a host's `current` symlink points at, or null. */
export function activeRelease(appDir: string): string | null {
  try {
    return basename(readlinkSync(join(appDir, 'current')));
  } catch {
    return null;
  }
}

/** How many of the hosts ran `version` (its health script ran there at least once). */
export function exposure(appDirs: string[], version: string): number {
  return appDirs.filter((d) => {
    const f = join(d, 'ran.log');
    return existsSync(f) && readFileSync(f, 'utf8').split('\n').includes(version);
  }).length;
}

// ---- the shipped agent build ----
function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true }))
    if (e.isFile()) t = Math.max(t, statSync(join(e.parentPath, e.name)).mtimeMs);
  return t;
}

/** dist/ringfence-agent.mjs, rebuilt when missing or older than src/. */
export async function shippedAgent(): Promise<string> {
  if (!existsSync(AGENT_BUNDLE) || statSync(AGENT_BUNDLE).mtimeMs < newest(join(ROOT, 'src')))
    await buildAgent({ quiet: true });
  return AGENT_BUNDLE;
}

/** One agent's config: a `dir` backend (releases/<v>/ and a `current` symlink) and the release's health script. */
function agentConfig(server: string, token: string, name: string, wake: 'long-poll' | 'off' | null): string {
  return stringify({
    server,
    enroll_token: token,
    name,
    state_dir: './state',
    labels: { bench: 'ansible' },
    // No poll_interval: the agent polls at the interval the server tells it (server.yaml poll_seconds).
    // Explicit either way where the agent knows the option (its default may be on); omitted where it does not.
    ...(wake ? { wake } : {}),
    components: [
      {
        name: COMPONENT,
        backend: { type: 'dir', path: './app', keep: 3 },
        health: [{ name: 'health', exec: 'sh current/health.sh', timeout: '10s' }],
        // One round of checks, as the playbook runs the script once.
        probation: { window: 0 },
      },
    ],
  });
}

/** Whether this checkout's agent config accepts `wake: long-poll` (wake-ups, issue 11 item 1). */
async function agentAcceptsWake(dir: string): Promise<boolean> {
  const file = join(dir, 'wake-probe.yaml');
  writeFileSync(file, agentConfig('http://127.0.0.1:1', 'x', 'probe', 'long-poll'));
  try {
    const { loadAgentConfig } = await import('../src/agent/config.ts');
    loadAgentConfig(file);
    return true;
  } catch {
    return false;
  }
}

export interface Fleet {
  conn: Conn;
  appDirs: string[];
  wake: boolean;
  pollSeconds: number;
  server: ChildProcess;
  agents: ChildProcess[];
}

/** Builds the agent, starts the server and N agents in `dir`, and waits until all N have enrolled. */
export async function startFleet(o: {
  dir: string;
  hosts: number;
  pollSeconds: number | null;
  wake: boolean;
  say: (s: string) => void;
}): Promise<Fleet> {
  const bundle = await shippedAgent();
  const data = join(o.dir, 'server');
  const keys = spawnGroup(process.execPath, [BIN, 'keys', 'init', '--data', data, '--json'], {
    stdio: 'ignore',
  });
  const code = await new Promise((r) => keys.once('exit', r));
  if (code !== 0) throw new Error(`ringfence keys init exited ${code}`);
  // Every agent shares one loopback address here, where a real fleet has one per host: only the per-address
  // limits are raised. Omitted keys keep their defaults (poll_seconds 30 unless --poll).
  writeFileSync(
    join(data, 'server.yaml'),
    stringify({
      host: '127.0.0.1',
      port: 0,
      ...(o.pollSeconds ? { poll_seconds: o.pollSeconds } : {}),
      limits: { enrollment_burst: o.hosts + 100, connections_per_ip: 4 * o.hosts + 256 },
      // One operator imports and approves the benchmark's releases: four eyes (issue 12) is off here.
      governance: { four_eyes: false },
    }),
  );
  const log = join(o.dir, 'server.log');
  const fd = openSync(log, 'a');
  const server = spawnGroup(process.execPath, [BIN, 'server', '--data', data], {
    stdio: ['ignore', fd, fd],
    env: { ...process.env, RINGFENCE_INITIAL_ADMIN_TOKEN: ADMIN, RINGFENCE_LOG_LEVEL: 'info' },
  });
  const url = await waitFor(
    () => {
      if (server.exitCode !== null) throw new Error(`server exited ${server.exitCode}; see ${log}`);
      const line = readFileSync(log, 'utf8')
        .split('\n')
        .find((l) => l.includes('ringfence server listening'));
      return line ? (JSON.parse(line) as { address: string }).address : undefined;
    },
    120_000,
    'the server to listen',
  );
  const conn: Conn = { server: url, token: ADMIN };
  const pollSeconds = o.pollSeconds ?? 30;
  const known = await agentAcceptsWake(o.dir);
  const wake = known && o.wake;
  const token = (await api<{ token: string }>(conn, 'POST', '/v1/admin/enroll-tokens', { uses: o.hosts }))
    .token;
  const appDirs: string[] = [];
  const agents: ChildProcess[] = [];
  for (let i = 0; i < o.hosts; i++) {
    const host = join(o.dir, 'hosts', `host-${i}`);
    mkdirSync(join(host, 'app'), { recursive: true });
    writeFileSync(
      join(host, 'agent.yaml'),
      agentConfig(url, token, `host-${i}`, known ? (o.wake ? 'long-poll' : 'off') : null),
    );
    const afd = openSync(join(host, 'agent.log'), 'a');
    agents.push(
      spawnGroup(process.execPath, [bundle, '--config', join(host, 'agent.yaml')], {
        stdio: ['ignore', afd, afd],
        cwd: host,
        env: { ...process.env, RINGFENCE_LOG_LEVEL: 'warn' },
      }),
    );
    appDirs.push(join(host, 'app'));
  }
  let last = -1;
  await waitFor(
    async () => {
      const dead = agents.findIndex((a) => a.exitCode !== null);
      if (dead >= 0) throw new Error(`agent host-${dead} exited ${agents[dead].exitCode}`);
      const n = (await api<unknown[]>(conn, 'GET', '/v1/admin/devices')).length;
      if (n !== last && n % 10 === 0) o.say(`    ${n}/${o.hosts} agents enrolled`);
      last = n;
      return n >= o.hosts ? true : undefined;
    },
    60_000 + o.hosts * 2000,
    `${o.hosts} agents to enroll`,
    500,
  );
  return { conn, appDirs, wake, pollSeconds, server, agents };
}

/** Kills the fleet's agents and server. */
export async function stopFleet(f: Fleet): Promise<void> {
  await Promise.all([...f.agents, f.server].map(killGroup));
}

/** The plan: waves of exactly the batch sizes Ansible's serial makes, no bake, no failure allowed. */
export async function applyPlan(f: Fleet, batches: number[]): Promise<void> {
  const waves = batches.map((size, i) =>
    i === batches.length - 1
      ? `  - { name: w${i + 1}, size: 100%, max_failures: 0 }`
      : `  - { name: w${i + 1}, size: ${size}, max_failures: 0 }`,
  );
  const source = `name: bench-ansible\non_failure: halt\nreport_deadline: 30m\nwaves:\n${waves.join('\n')}\n`;
  await api(f.conn, 'POST', '/v1/admin/plans', { source });
}

/** Imports and approves a release (untimed: the release is ready before either tool starts). */
export async function prepareRelease(f: Fleet, folder: string, version: string): Promise<void> {
  await importRelease(f.conn, COMPONENT, version, [folder]);
  await api(f.conn, 'POST', `/v1/admin/releases/${COMPONENT}@${version}/approve`, {});
}

interface RolloutView {
  id: number;
  status: string;
  exposed: number;
  waves: Array<{ name: string; selected: number; offered: number; succeeded: number; failed: number }>;
}

/**
 * Starts the rollout and times it: a good release until the rollout is completed and every host runs it; a bad
 * one until the rollout is halted with a failure reported, so nothing more is offered, and no host runs it.
 */
export async function timedRollout(f: Fleet, version: string, good: boolean, ceilingMs: number) {
  const t0 = performance.now();
  const r = await api<RolloutView>(f.conn, 'POST', '/v1/admin/rollouts', {
    release: `${COMPONENT}@${version}`,
    plan: 'bench-ansible',
    supersede: true, // the previous round's halted rollout is aborted
  });
  const end = await waitFor(
    async () => {
      const v = await api<RolloutView>(f.conn, 'GET', `/v1/admin/rollouts/${r.id}`);
      if (good && ['halted', 'aborted'].includes(v.status)) throw new Error(`good rollout ${v.status}`);
      if (!good && v.status === 'completed') throw new Error('bad rollout completed');
      const on = f.appDirs.filter((d) => activeRelease(d) === version).length;
      if (good) return v.status === 'completed' && on === f.appDirs.length ? v : undefined;
      return v.status === 'halted' && v.waves.some((w) => w.failed > 0) && on === 0 ? v : undefined;
    },
    ceilingMs,
    `${COMPONENT}@${version} rollout (${good ? 'completed on every host' : 'halted, no host on it'})`,
    50,
  );
  return { seconds: (performance.now() - t0) / 1000, exposed_server: end.exposed, waves: end.waves };
}
