// Real agent processes for the demo and the end-to-end tests: each device gets its own folder, config,
// a small service self-test whose health depends on the content it runs, and its own OS process.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { packageRoot } from '../files/package-root.ts';

export const BIN = join(packageRoot(), 'bin/ringfence.js');

/** The device-side service self-test: it loads the content it runs; bad content makes it crash. */
export const SERVICE_CHECK = `#!/bin/sh
# Starts the sensor service against the active content and probes it once.
conf="$RINGFENCE_CURRENT/service.conf"
threads=$(sed -n 's/^threads=//p' "$conf" 2>/dev/null)
case "$threads" in
  ''|*[!0-9]*|0) echo "sensor service crashed on start: invalid threads '$threads' in service.conf"; exit 1 ;;
esac
echo "sensor service up with $threads threads"
`;

export interface DeviceSpec {
  name: string;
  labels: Record<string, string>;
}

export interface SpawnedDevice extends DeviceSpec {
  dir: string;
  config: string;
  appDir: string;
  proc: ChildProcess | null;
}

/** Writes a device's folder and agent config. */
export function prepareDevice(
  root: string,
  spec: DeviceSpec,
  server: string,
  enrollToken: string,
  opts: { pollMs?: number; probationMs?: number; extraEnv?: Record<string, string> } = {},
): SpawnedDevice {
  const dir = join(root, spec.name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'service-check.sh'), SERVICE_CHECK, { mode: 0o755 });
  const config = join(dir, 'agent.yaml');
  writeFileSync(
    config,
    stringify({
      server,
      enroll_token: enrollToken,
      name: spec.name,
      state_dir: './state',
      labels: spec.labels,
      poll_interval: `${opts.pollMs ?? 1000}ms`,
      retry: { base: '500ms', max: '5s' },
      components: [
        {
          name: 'sensor-content',
          backend: { type: 'dir', path: './app', keep: 3 },
          health: [{ name: 'service', exec: `sh ${join(dir, 'service-check.sh')}`, timeout: '5s' }],
          probation: { window: `${opts.probationMs ?? 1000}ms`, interval: '300ms' },
          max_attempts: 3,
        },
      ],
    }),
  );
  return { ...spec, dir, config, appDir: join(dir, 'app'), proc: null };
}

/** Starts the agent of a prepared device as its own process, logging to agent.log in its folder. */
export function startAgent(d: SpawnedDevice, env: Record<string, string> = {}): ChildProcess {
  const log = openSync(join(d.dir, 'agent.log'), 'a');
  const proc = spawn(process.execPath, [BIN, 'agent', '--config', d.config], {
    stdio: ['ignore', log, log],
    env: { ...process.env, RINGFENCE_LOG_LEVEL: 'info', ...env },
  });
  d.proc = proc;
  return proc;
}

/** Stops agents: SIGTERM, then SIGKILL for any still running after a grace period. */
export async function stopAgents(devices: SpawnedDevice[], graceMs = 2000): Promise<void> {
  const running = devices
    .map((d) => d.proc)
    .filter((p): p is ChildProcess => !!p && p.exitCode === null && p.signalCode === null);
  await Promise.all(
    running.map(
      (p) =>
        new Promise<void>((res) => {
          const t = setTimeout(() => p.kill('SIGKILL'), graceMs);
          p.once('exit', () => {
            clearTimeout(t);
            res();
          });
          p.kill('SIGTERM');
        }),
    ),
  );
}

/** A release folder for the demo's sensor content. */
export function writeContent(dir: string, version: string, threads: number): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'service.conf'), `# sensor content ${version}\nthreads=${threads}\n`);
  writeFileSync(join(dir, 'channel-291.dat'), `definitions ${version}\n`.repeat(64));
  return dir;
}
