// The child processes of a test file: spawned in their own process group, killed when the file ends (passed,
// failed or crashed), and a file-level check that fails the file when any of them outlived its tests. A child
// left running keeps the test file's process alive and hangs the whole run, so a leak must be loud.
import assert from 'node:assert/strict';
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { after } from 'node:test';

/** A live process seen in /proc: its id and command line. */
export interface LiveProcess {
  pid: number;
  cmd: string;
}

const tracked = new Set<ChildProcess>();
const groupLeaders = new WeakSet<ChildProcess>();

/** Registers a child so that it is killed at the end of the file at the latest; returns it. */
export function track<T extends ChildProcess>(p: T): T {
  tracked.add(p);
  p.once('exit', () => tracked.delete(p));
  return p;
}

/**
 * spawn() in a new process group, registered: killProcess (or the end of the file) ends the child and everything
 * it started, so a shell's or an agent's own children cannot survive it.
 */
export function spawnGroup(cmd: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
  const p = spawn(cmd, args, { ...opts, detached: true });
  groupLeaders.add(p);
  return track(p);
}

/** Whether the child has not exited yet. */
export function alive(p: ChildProcess): boolean {
  return p.exitCode === null && p.signalCode === null;
}

/** Sends a signal to the child's process group when it leads one, else to the child alone; ignores the gone. */
export function signal(p: ChildProcess, sig: NodeJS.Signals): void {
  if (p.pid === undefined) return;
  try {
    process.kill(groupLeaders.has(p) ? -p.pid : p.pid, sig);
  } catch {
    // already gone
  }
}

/** SIGKILLs a child (with its process group) and waits until it has exited. */
export async function killProcess(p: ChildProcess | null | undefined): Promise<void> {
  if (!p) return;
  if (!alive(p)) {
    if (groupLeaders.has(p)) signal(p, 'SIGKILL'); // its group may outlive the leader
    return;
  }
  const exited = new Promise<void>((res) => p.once('exit', () => res()));
  signal(p, 'SIGKILL');
  await exited;
}

/** SIGKILLs every tracked child still running and waits for them: a test's own cleanup, passed or failed. */
export async function killTracked(): Promise<void> {
  await Promise.all([...tracked].map((p) => killProcess(p)));
}

/**
 * Promise.all that waits for every branch before it fails with the first error: a branch that is still
 * starting and killing agents cannot run on past its test's end and its cleanup.
 */
export async function allSettled<T>(branches: Array<Promise<T>>): Promise<T[]> {
  const values: T[] = [];
  for (const r of await Promise.allSettled(branches)) {
    if (r.status === 'rejected') throw r.reason;
    values.push(r.value);
  }
  return values;
}

/**
 * The live (not zombie) descendants of this process, from /proc (none where there is no /proc). tsx's esbuild
 * service is the test runner's own helper, not a test's child, so it does not count.
 */
export function liveDescendants(root = process.pid): LiveProcess[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  } catch {
    return [];
  }
  const parent = new Map<number, number>();
  const zombie = new Set<number>();
  for (const e of entries) {
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      // The command name is in parentheses and may contain spaces: the fields start after the last ')'.
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(e), Number(ppid));
      if (state === 'Z' || state === 'X') zombie.add(Number(e));
    } catch {
      // exited while we looked
    }
  }
  const isDescendant = (pid: number): boolean => {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) if (p === root) return true;
    return false;
  };
  const out: LiveProcess[] = [];
  for (const pid of parent.keys()) {
    if (zombie.has(pid) || !isDescendant(pid)) continue;
    let cmd = '';
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
    } catch {
      continue;
    }
    if (/\besbuild\b.*--service/.test(cmd)) continue;
    out.push({ pid, cmd });
  }
  return out;
}

/** Kills every tracked child (with its group) and every live descendant, at once; returns what was alive. */
export function killAllNow(): LiveProcess[] {
  const left = liveDescendants();
  for (const p of tracked) signal(p, 'SIGKILL');
  for (const { pid } of left) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  return left;
}

// Whatever ends the file (a crash, --test-force-exit, an uncaught error), its children go with it.
process.on('exit', () => {
  killAllNow();
});

/**
 * The file-level check, for every test file that spawns processes: after all its tests (call it after the
 * file's own top-level `after` hooks, which run in order), no child may still be alive. Leftovers are killed
 * and named, and the file fails.
 */
export function guardProcesses(): void {
  after(() => {
    const left = killAllNow();
    assert.deepEqual(left, [], `child processes outlived the tests and were killed: ${JSON.stringify(left)}`);
  });
}
