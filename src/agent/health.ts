// Health checks defined on the device. A check that fails, hangs past its timeout or cannot start is a failure.
import { readFileSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { request, text } from '../net/http.ts';
import { runCommand } from './command.ts';
import type { ComponentConfig, HealthCheckConfig } from './config.ts';
import type { HealthResult } from './journal.ts';

type Outcome = { ok: boolean; output: string };

const withTimeout = <T>(p: Promise<T>, ms: number, onTimeout: () => T): Promise<T> =>
  new Promise((resolve) => {
    const t = setTimeout(() => resolve(onTimeout()), ms);
    p.then((v) => {
      clearTimeout(t);
      resolve(v);
    });
  });

async function httpCheck(c: Extract<HealthCheckConfig, { http: string }>): Promise<Outcome> {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), c.timeout);
  try {
    const res = await request(c.http, { signal: ctl.signal });
    const body = await text(res);
    if (res.status !== c.status)
      return { ok: false, output: `HTTP ${res.status}, expected ${c.status}: ${body.slice(0, 200)}` };
    if (c.body && !new RegExp(c.body).test(body))
      return { ok: false, output: `body does not match /${c.body}/: ${body.slice(0, 200)}` };
    return { ok: true, output: `HTTP ${res.status}` };
  } catch (e) {
    return {
      ok: false,
      output: ctl.signal.aborted ? `timed out after ${c.timeout} ms` : (e as Error).message,
    };
  } finally {
    clearTimeout(t);
  }
}

function tcpCheck(c: Extract<HealthCheckConfig, { tcp: string }>): Promise<Outcome> {
  const i = c.tcp.lastIndexOf(':');
  const host = c.tcp.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(c.tcp.slice(i + 1));
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const t = setTimeout(() => {
      s.destroy();
      resolve({ ok: false, output: `timed out after ${c.timeout} ms connecting to ${c.tcp}` });
    }, c.timeout);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve({ ok: true, output: `connected to ${c.tcp}` });
    });
    s.once('error', (e) => {
      clearTimeout(t);
      resolve({ ok: false, output: `cannot connect to ${c.tcp}: ${e.message}` });
    });
  });
}

function fileCheck(c: Extract<HealthCheckConfig, { file: string }>): Outcome {
  try {
    if (!statSync(c.file).isFile()) return { ok: false, output: `${c.file} is not a file` };
    if (c.contains) {
      const text = readFileSync(c.file, 'utf8');
      if (!new RegExp(c.contains, 'm').test(text))
        return { ok: false, output: `${c.file} does not match /${c.contains}/: ${text.slice(0, 200)}` };
    }
    return { ok: true, output: `${c.file} ok` };
  } catch (e) {
    return { ok: false, output: `${c.file}: ${(e as Error).message}` };
  }
}

async function once(c: HealthCheckConfig, cwd: string, env: Record<string, string>): Promise<Outcome> {
  if ('exec' in c) return runCommand(c.exec, { cwd, env, timeout: c.timeout });
  if ('http' in c) return httpCheck(c);
  if ('tcp' in c) return tcpCheck(c);
  return withTimeout(Promise.resolve(fileCheck(c)), c.timeout, () => ({
    ok: false,
    output: `timed out after ${c.timeout} ms`,
  }));
}

/** Runs one check, retrying up to `retries` times `interval` apart; the last attempt's output is kept. */
export async function runCheck(
  c: HealthCheckConfig,
  cwd: string,
  env: Record<string, string>,
  sleep: (ms: number) => Promise<void>,
): Promise<HealthResult> {
  const started = Date.now();
  let r: Outcome = { ok: false, output: '' };
  for (let attempt = 0; attempt <= c.retries; attempt++) {
    if (attempt > 0) await sleep(c.interval);
    r = await once(c, cwd, env);
    if (r.ok) break;
  }
  return { name: c.name, ok: r.ok, durationMs: Date.now() - started, output: r.output.slice(-500) };
}

/** Where a component's checks (and signal sources) run: its folder. */
export function checkCwd(comp: ComponentConfig, env: Record<string, string>): string {
  return comp.backend.type === 'file' ? (env.RINGFENCE_COMPONENT_DIR ?? '/') : comp.backend.path;
}

/**
 * Probation: runs every check at once, then every `interval` until `window` has passed. The first
 * failing round ends probation with a failure; no check configured counts as passing. `onRound` runs at each
 * round too (the agent takes a signal sample there).
 */
export async function probation(
  comp: ComponentConfig,
  env: Record<string, string>,
  sleep: (ms: number) => Promise<void>,
  onRound?: () => Promise<unknown>,
): Promise<{ ok: boolean; checks: HealthResult[] }> {
  const started = Date.now();
  const cwd = checkCwd(comp, env);
  for (;;) {
    // `onRound` (a signal sample) runs beside the checks and never decides the round.
    const [checks] = await Promise.all([
      Promise.all(comp.health.map((c) => runCheck(c, cwd, env, sleep))),
      onRound?.().catch(() => {}),
    ]);
    if (checks.some((c) => !c.ok)) return { ok: false, checks };
    if (Date.now() - started + comp.probation.interval > comp.probation.window) return { ok: true, checks };
    await sleep(comp.probation.interval);
  }
}
