// Health checks defined on the device. A check that fails, hangs past its timeout or cannot start is a failure.
import { spawn } from 'node:child_process';
import type { ComponentConfig } from './config.ts';
import type { HealthResult } from './journal.ts';

/** Runs one exec check with a timeout; the whole process group is killed when it hangs. */
export function runExecCheck(
  check: { name: string; exec: string; timeout: number },
  cwd: string,
  env: Record<string, string>,
): Promise<HealthResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    let output = '';
    let settled = false;
    const done = (ok: boolean, extra = '') => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({
        name: check.name,
        ok,
        durationMs: Date.now() - started,
        output: (output + extra).slice(-500),
      });
    };
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn('/bin/sh', ['-c', check.exec], {
        cwd,
        env: { ...process.env, ...env },
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (e) {
      resolve({
        name: check.name,
        ok: false,
        durationMs: 0,
        output: `cannot start: ${(e as Error).message}`,
      });
      return;
    }
    const timer = setTimeout(() => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {}
      done(false, `\ntimed out after ${check.timeout} ms`);
    }, check.timeout);
    child.stdout?.on('data', (d) => {
      output = (output + d).slice(-2000);
    });
    child.stderr?.on('data', (d) => {
      output = (output + d).slice(-2000);
    });
    child.on('error', (e) => done(false, `\ncannot start: ${e.message}`));
    child.on('close', (code, signal) => done(code === 0, code === 0 ? '' : `\nexit ${code ?? signal}`));
  });
}

/**
 * Probation: runs every check at once, then every `interval` until `window` has passed. The first
 * failing round ends probation with a failure; no check configured counts as passing.
 */
export async function probation(
  comp: ComponentConfig,
  env: Record<string, string>,
  sleep: (ms: number) => Promise<void>,
): Promise<{ ok: boolean; checks: HealthResult[] }> {
  const started = Date.now();
  for (;;) {
    const checks = await Promise.all(comp.health.map((c) => runExecCheck(c, comp.backend.path, env)));
    if (checks.some((c) => !c.ok)) return { ok: false, checks };
    if (Date.now() - started + comp.probation.interval > comp.probation.window) return { ok: true, checks };
    await sleep(comp.probation.interval);
  }
}
