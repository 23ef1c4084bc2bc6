// Crash-safe file writes: a reader sees the old content or the new content, never a torn mix.
import {
  chmodSync,
  closeSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

function tempName(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`);
}

/** fsyncs a directory so a rename inside it survives power loss. */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Writes a file atomically (temp file + fsync + rename + directory fsync). */
export function writeFileAtomicSync(path: string, data: string | Uint8Array, mode = 0o644): void {
  const tmp = tempName(path);
  writeDurableSync(tmp, data, mode);
  renameSync(tmp, path);
  fsyncDir(dirname(path));
}

/** Writes a new temporary file completely and fsyncs it (never one that exists: 'wx'). */
function writeDurableSync(tmp: string, data: string | Uint8Array, mode: number): void {
  const fd = openSync(tmp, 'wx', mode);
  try {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Like writeFileAtomicSync, but never replaces a file: published with link(), which fails with EEXIST when `path`
 * exists by then (a check before writing would leave a window for a file created meanwhile).
 */
export function writeFileNewSync(path: string, data: string | Uint8Array, mode = 0o644): void {
  const tmp = tempName(path);
  writeDurableSync(tmp, data, mode);
  try {
    linkSync(tmp, path);
  } finally {
    unlinkSync(tmp);
  }
  fsyncDir(dirname(path));
}

/** Async variant of writeFileAtomicSync for the server's hot paths. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = tempName(path);
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  fsyncDir(dirname(path));
}

/** Where a permission was tightened (or could not be): for the server's log. */
export interface PermissionFix {
  path: string;
  /** Permission bits found, e.g. 0o755. */
  from: number;
  /** Permission bits set, e.g. 0o700 (equal to `from` when chmod failed). */
  to: number;
  error?: string;
}

/** Anything with pino's `warn(obj, msg)`; without one, notes go to stderr (never stdout: --json stays clean). */
export interface PermissionLog {
  warn(obj: Record<string, unknown>, msg: string): void;
}

const octal = (m: number) => `0${(m & 0o777).toString(8).padStart(3, '0')}`;

/** The fallback log: one stderr line per note ("ringfence: tightened …: path=/srv/rf from=0755 to=0700"). */
export const stderrPermissionLog: PermissionLog = {
  warn(obj, msg) {
    const fields = Object.entries(obj)
      .map(([k, v]) => `${k}=${String(v)}`)
      .join(' ');
    process.stderr.write(`ringfence: ${msg}: ${fields}\n`);
  },
};

/** Logs a PermissionFix as one warning (pino-style object first). */
export function logPermissionFix(log: PermissionLog, fix: PermissionFix): void {
  log.warn(
    { path: fix.path, from: octal(fix.from), to: octal(fix.to), ...(fix.error ? { error: fix.error } : {}) },
    fix.error
      ? 'could not tighten permissions: other users may read this'
      : 'tightened permissions: this was readable by other users',
  );
}

/**
 * Removes every group and other permission bit from an existing file or folder (0755 -> 0700, 0644 -> 0600),
 * logging what it changed. Returns the fix, or null when the mode was already private or the path is missing.
 */
export function tightenMode(path: string, log: PermissionLog = stderrPermissionLog): PermissionFix | null {
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch {
    return null;
  }
  if ((mode & 0o077) === 0) return null;
  const to = mode & 0o700;
  let fix: PermissionFix;
  try {
    chmodSync(path, to);
    fix = { path, from: mode, to };
  } catch (e) {
    fix = { path, from: mode, to: mode, error: (e as Error).message };
  }
  logPermissionFix(log, fix);
  return fix;
}

/** Creates a folder (and missing parents) readable by its owner only, or tightens an existing one. */
export function ensurePrivateDir(
  dir: string,
  log: PermissionLog = stderrPermissionLog,
): PermissionFix | null {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return tightenMode(dir, log);
}

/** Creates an empty file readable by its owner only when missing (before another library creates it 0644). */
export function ensurePrivateFile(
  path: string,
  log: PermissionLog = stderrPermissionLog,
): PermissionFix | null {
  closeSync(openSync(path, 'a', 0o600));
  return tightenMode(path, log);
}
