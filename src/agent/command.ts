// Runs an operator-defined shell command (health check, hook or exec-backend step) with a hard timeout.
// The command runs in its own process group so a hang takes its children down with it.
import { spawn } from 'node:child_process';

export interface CommandResult {
  ok: boolean;
  timedOut: boolean;
  durationMs: number;
  output: string; // the last 500 characters of stdout+stderr, plus why it failed
}

export function runCommand(
  cmd: string,
  opts: { cwd: string; env: Record<string, string>; timeout: number },
): Promise<CommandResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    let output = '';
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const done = (ok: boolean, timedOut: boolean, extra = '') => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ok, timedOut, durationMs: Date.now() - started, output: (output + extra).slice(-500) });
    };
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn('/bin/sh', ['-c', cmd], {
        cwd: opts.cwd,
        env: { ...process.env, ...opts.env },
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (e) {
      done(false, false, `cannot start: ${(e as Error).message}`);
      return;
    }
    timer = setTimeout(() => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {}
      done(false, true, `\ntimed out after ${opts.timeout} ms`);
    }, opts.timeout);
    const add = (d: Buffer) => {
      output = (output + d).slice(-2000);
    };
    child.stdout?.on('data', add);
    child.stderr?.on('data', add);
    child.on('error', (e) => done(false, false, `\ncannot start: ${e.message}`));
    child.on('close', (code, signal) => {
      // sh reports a command it cannot find or execute as 127/126.
      const why = code === 127 ? ' (command not found)' : code === 126 ? ' (cannot execute)' : '';
      done(code === 0, false, code === 0 ? '' : `\nexit ${code ?? signal}${why}`);
    });
  });
}
