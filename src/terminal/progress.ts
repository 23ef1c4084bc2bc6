// Progress of long work (release import, bundle export and import) on stderr, for a person at a terminal only:
// scripts reading --json or a pipe see nothing. RINGFENCE_PROGRESS=0 turns it off, =1 on without a TTY (tests).
// No dependencies, so command files may import it statically (test/cli-startup.test.ts).

/** Where a piece of long work stands; bytes and files count up to their totals. */
export interface ProgressUpdate {
  phase: string;
  bytes: number;
  totalBytes: number;
  files: number;
  totalFiles: number;
}

export interface Progress {
  /** Whether anything is drawn: callers may skip work done only for the display. */
  readonly enabled: boolean;
  update(p: ProgressUpdate): void;
  /** The work finished: the last state stays on screen as a final line. */
  done(): void;
  /** The work failed: the line is cleared so the error message starts on a clean line. */
  clear(): void;
}

/** Redraws per second at most: a terminal flooded with updates slows the work down. */
const REDRAW_MS = 100;

/** Whether progress is shown: off with --json or RINGFENCE_PROGRESS=0, forced with =1, else on a terminal only. */
export function progressWanted(
  json: boolean | undefined,
  stream: { isTTY?: boolean } = process.stderr,
): boolean {
  const env = process.env.RINGFENCE_PROGRESS;
  if (json || env === '0') return false;
  return env === '1' || stream.isTTY === true;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${UNITS[u]}`;
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const t = Math.max(0, Math.round(s));
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
}

/**
 * One status line: "release import: uploading 12.0 MiB / 20.0 MiB (60%), 120/200 files, 30.1 MiB/s, ETA 1s", or
 * the final one: "release import: done, 20.0 MiB, 200/200 files in 1s, 30.1 MiB/s".
 */
export function progressLine(label: string, p: ProgressUpdate, elapsedMs: number, final = false): string {
  const secs = elapsedMs / 1000;
  const rate = secs > 0 ? p.bytes / secs : 0;
  const pct = p.totalBytes > 0 ? ` (${Math.floor((p.bytes * 100) / p.totalBytes)}%)` : '';
  const files = `${p.files}/${p.totalFiles} files`;
  const speed = rate > 0 ? `, ${formatBytes(rate)}/s` : '';
  if (final) return `${label}: done, ${formatBytes(p.bytes)}, ${files} in ${formatSeconds(secs)}${speed}`;
  const eta =
    rate > 0 && p.totalBytes > p.bytes ? `, ETA ${formatSeconds((p.totalBytes - p.bytes) / rate)}` : '';
  return `${label}: ${p.phase} ${formatBytes(p.bytes)} / ${formatBytes(p.totalBytes)}${pct}, ${files}${speed}${eta}`;
}

/**
 * A progress reporter for `label` (the command, e.g. "release import"). Disabled (every call a no-op) unless
 * progressWanted(json). The line is redrawn in place with \r and padded over the previous one, so no terminal
 * escape codes are needed.
 */
export function progressReporter(
  label: string,
  opts: { json?: boolean; stream?: { write(s: string): unknown; isTTY?: boolean }; now?: () => number } = {},
): Progress {
  const stream = opts.stream ?? process.stderr;
  const now = opts.now ?? Date.now;
  const enabled = progressWanted(opts.json, stream);
  let start = 0; // the first update: loading the command's modules is not part of the work's rate
  let last: ProgressUpdate | null = null;
  let drawnAt = Number.NEGATIVE_INFINITY;
  let width = 0;
  let open = false;
  const draw = (text: string, end: string) => {
    stream.write(`\r${text.padEnd(width)}${end}`);
    width = end ? 0 : text.length;
    open = !end;
  };
  return {
    enabled,
    update(p) {
      if (!enabled) return;
      const t = now();
      if (!last) start = t;
      last = { ...p };
      if (t - drawnAt < REDRAW_MS) return;
      drawnAt = t;
      draw(progressLine(label, p, t - start), '');
    },
    done() {
      if (!enabled || !last) return;
      draw(progressLine(label, last, now() - start, true), '\n');
    },
    clear() {
      if (!enabled || !open) return;
      stream.write(`\r${' '.repeat(width)}\r`);
      width = 0;
      open = false;
    },
  };
}
