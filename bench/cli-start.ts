// `npm run bench:cli` (and `npm run bench -- --only cli`): how fast the compiled CLI starts, against `node -e 0`
// measured in the same run, and how soon `ringfence server` serves its first request. Targets (issue 13):
// `--version` and `--help` within 3× of `node -e 0`; the server ready within 1 s.
// Rounds alternate the commands (A B C, C B A, …) so a busy neighbour hurts each about equally.
// Options: --rounds 15 (per command), --server-rounds 5.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildCli, CLI_ENTRY } from '../scripts/build-cli.ts';
import { round, spread } from './stats.ts';

/** Wall time of one process run to completion, in ms: what a script calling the CLI waits for. */
function timeRun(args: string[]): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return wall;
}

/** Spawns the compiled server on a free port and measures the time until /healthz answers 200. */
async function serverReady(): Promise<number> {
  const data = mkdtempSync(join(tmpdir(), 'rf-bench-start-'));
  const t0 = process.hrtime.bigint();
  const child = spawn(process.execPath, [CLI_ENTRY, 'server', '--data', data, '--port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      RINGFENCE_INITIAL_ADMIN_TOKEN: 'rfadm_bench_0123456789abcdefghijklmnopqrstuvwxyz',
    },
  });
  try {
    let out = '';
    const url = await new Promise<string>((res, rej) => {
      const look = (d: Buffer) => {
        out += d;
        const m = /"address":"(http:\/\/[^"]+)"/.exec(out);
        if (m) res(m[1]);
      };
      child.stdout.on('data', look);
      child.stderr.on('data', look);
      child.once('exit', (c) => rej(new Error(`server exited ${c}: ${out}`)));
    });
    for (;;) {
      const ok = await fetch(`${url}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) return Number(process.hrtime.bigint() - t0) / 1e6;
    }
  } finally {
    child.kill('SIGKILL');
    rmSync(data, { recursive: true, force: true });
  }
}

export interface CliStartResult {
  rounds: number;
  ms: Record<string, ReturnType<typeof spread>>;
  ratio_to_node: Record<string, ReturnType<typeof spread>>;
  server_ready_ms: ReturnType<typeof spread>;
}

/** Runs the bench and returns its figures (printing them as it goes). */
export async function benchCliStart(opts: { rounds: number; serverRounds: number }): Promise<CliStartResult> {
  const say = (s: string) => process.stdout.write(`${s}\n`);
  await buildCli({ quiet: true });
  const cmds: Record<string, string[]> = {
    'node -e 0': ['-e', '0'],
    'ringfence --version': [CLI_ENTRY, '--version'],
    'ringfence --help': [CLI_ENTRY, '--help'],
    'ringfence fleet --help': [CLI_ENTRY, 'fleet', '--help'],
  };
  const names = Object.keys(cmds);
  for (const n of names) timeRun(cmds[n]); // warm the page cache
  const wall: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  const ratios: Record<string, number[]> = Object.fromEntries(names.slice(1).map((n) => [n, []]));
  for (let r = 0; r < opts.rounds; r++) {
    const order = r % 2 ? [...names].reverse() : names;
    const got: Record<string, number> = {};
    for (const n of order) got[n] = timeRun(cmds[n]);
    for (const n of names) wall[n].push(got[n]);
    for (const n of names.slice(1)) ratios[n].push(got[n] / got['node -e 0']);
  }
  const ms = Object.fromEntries(names.map((n) => [n, spread(wall[n], 1)]));
  const ratio = Object.fromEntries(names.slice(1).map((n) => [n, spread(ratios[n], 2)]));
  say(`CLI start (compiled build, ${opts.rounds} alternating rounds; wall ms, median and range):`);
  for (const n of names) {
    const s = ms[n];
    const x = ratio[n] ? `  ×${ratio[n].median} of node -e 0 (${ratio[n].min}–${ratio[n].max})` : '';
    say(`  ${n.padEnd(24)} ${String(s.median).padStart(7)} ms (${s.min}–${s.max})${x}`);
  }
  const ready: number[] = [];
  for (let r = 0; r < opts.serverRounds; r++) ready.push(await serverReady());
  const sr = spread(ready, 1);
  say(
    `  ringfence server, spawn to first /healthz 200: ${sr.median} ms (${sr.min}–${sr.max}); target < 1000 ms`,
  );
  const worst = Math.max(ratio['ringfence --version'].median, ratio['ringfence --help'].median);
  say(
    `  target: --version and --help within 3× of node -e 0: ${worst <= 3 ? 'met' : 'NOT met'} (×${round(worst)})`,
  );
  return { rounds: opts.rounds, ms, ratio_to_node: ratio, server_ready_ms: sr };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values } = parseArgs({
    options: { rounds: { type: 'string', default: '15' }, 'server-rounds': { type: 'string', default: '5' } },
  });
  const { writeFileSync } = await import('node:fs');
  const { cpus } = await import('node:os');
  const r = await benchCliStart({
    rounds: Number(values.rounds),
    serverRounds: Number(values['server-rounds']),
  });
  writeFileSync(
    new URL('./results/cli-start.json', import.meta.url),
    `${JSON.stringify({ at: new Date().toISOString(), machine: { node: process.version, cpus: cpus().length }, ...r }, null, 2)}\n`,
  );
}
