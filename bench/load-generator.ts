// Runs bench/checkin-load.ts (the check-in load generator) as its own process, so it never shares an event loop
// with the server it measures, and returns its figures.
import { spawn } from 'node:child_process';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;

/** One phase's figures, as the load generator prints them. */
export interface Load {
  requests: number;
  errors: number;
  seconds: number;
  rps: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
}

/** Per round: which side went first, and each side's figures. */
export interface Rounds {
  rounds: Array<{ first: 'a' | 'b'; a: Load; b: Load }>;
  phase_seconds: number;
}

/**
 * Alternates side A and side B (each a URL, or several comma-separated) in `rounds` rounds of seconds / rounds each
 * (A B, B A, …) and returns the figures per round.
 */
export function compareLoad(o: {
  urls: [string, string];
  tokensFile: string;
  rounds: number;
  concurrency: number | string;
  seconds: number | string;
  max?: number;
}): Promise<Rounds> {
  const args = [
    '--import',
    'tsx',
    join(root, 'bench', 'checkin-load.ts'),
    '--url',
    o.urls[0],
    '--url',
    o.urls[1],
  ];
  args.push('--rounds', String(o.rounds), '--tokens', o.tokensFile);
  args.push('--concurrency', String(o.concurrency), '--seconds', String(o.seconds));
  if (o.max !== undefined) args.push('--max', String(o.max));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], cwd: root });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0
        ? resolve(JSON.parse(out.trim().split('\n').at(-1)!))
        : reject(new Error(`load generator exited ${code}`)),
    );
  });
}
