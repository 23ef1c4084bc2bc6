// Device signals (evidence gates, docs/agent.md "Signals"): numbers a component's own configuration says how to
// measure — an exec source, a file or a Prometheus endpoint — sampled at check-ins and during probation, and sent
// once with the next check-in. The server never says what to measure or run. A failing source is logged and left
// out: signals never fail health or a transaction. Parsers are pure and bounded; hostile text cannot make them throw.
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { request, text } from '../net/http.ts';
import type { SignalSample } from '../protocol/device.ts';
// The contract's limits, from the TypeBox-free module device.ts re-exports (the agent keeps TypeBox unloaded).
import { MAX_SIGNAL_MAGNITUDE, MAX_SIGNALS, SIGNAL_NAME_RE } from '../protocol/signal-limits.ts';
import type { ComponentConfig } from './config.ts';
import { checkCwd } from './health.ts';

export { MAX_SIGNAL_MAGNITUDE, MAX_SIGNALS, SIGNAL_NAME_RE };

/** What a source may produce at most: exec stdout and files 64 KiB, an HTTP answer 1 MiB. */
export const MAX_EXEC_OUTPUT = 64 * 1024;
export const MAX_FILE_BYTES = 64 * 1024;
export const MAX_HTTP_BYTES = 1024 * 1024;
/** Parse errors kept per source (the rest are counted): a log line stays short. */
const MAX_ERRORS = 5;

export type SignalsConfig = NonNullable<ComponentConfig['signals']>;
export type SignalSourceConfig = SignalsConfig['sources'][number];

/** What a parser could read: the configured names with finite, bounded values, and what it could not. */
export interface ParsedSignals {
  values: Record<string, number>;
  errors: string[];
}

/** The logger the sampler needs (pino's). */
export interface SignalLog {
  warn(obj: object, msg: string): void;
}

// A decimal number as scripts and Prometheus print it; NaN, Inf, hex and empty strings are not (Number() takes them).
const NUMBER_RE = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;
const PROM_NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const PROM_LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const PROM_NON_FINITE = /^[+-]?(?:nan|inf)$/i;

/** A bit of hostile text, bounded and quoted, for an error message. */
const quote = (s: string) => JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);

/** The configured names a parser takes: valid names only, at most MAX_SIGNALS. */
function wanted(names: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (const n of names) {
    if (out.size >= MAX_SIGNALS) break;
    if (typeof n === 'string' && SIGNAL_NAME_RE.test(n)) out.add(n);
  }
  return out;
}

class Errors {
  readonly list: string[] = [];
  private more = 0;
  add(e: string): void {
    if (this.list.length < MAX_ERRORS) this.list.push(e);
    else this.more++;
  }
  done(): string[] {
    return this.more ? [...this.list, `and ${this.more} more`] : this.list;
  }
}

function bounded(v: number, name: string, errors: Errors): boolean {
  if (!Number.isFinite(v)) errors.add(`${name}: not a finite number`);
  else if (Math.abs(v) > MAX_SIGNAL_MAGNITUDE) errors.add(`${name}: beyond ±${MAX_SIGNAL_MAGNITUDE}`);
  else return true;
  return false;
}

/** Cuts text to `max` characters, noting it. */
function cut(input: string, max: number, errors: Errors): string {
  if (typeof input !== 'string') return '';
  if (input.length <= max) return input;
  errors.add(`input longer than ${max} characters: the rest is ignored`);
  return input.slice(0, max);
}

/**
 * `name=value` lines (spaces around `=` allowed, `#` comments, blank lines) or one JSON object `{"name": number}`.
 * Only the configured names are taken (others are ignored); a name given twice keeps its last value.
 */
export function parseSignalText(input: string, names: readonly string[]): ParsedSignals {
  const want = wanted(names);
  const errors = new Errors();
  const values = new Map<string, number>();
  const t = cut(input, MAX_EXEC_OUTPUT, errors);
  if (t.trimStart().startsWith('{')) {
    let obj: unknown;
    try {
      obj = JSON.parse(t);
    } catch {
      errors.add('not valid JSON');
    }
    if (obj && typeof obj === 'object' && !Array.isArray(obj)) {
      for (const [k, v] of Object.entries(obj)) {
        if (!want.has(k)) continue;
        if (typeof v !== 'number') errors.add(`${k}: not a number`);
        else if (bounded(v, k, errors)) values.set(k, v);
      }
    } else if (obj !== undefined) errors.add('JSON that is not an object');
  } else {
    const lines = t.split(/\r?\n|\r/);
    for (let i = 0; i < lines.length; i++) {
      const hash = lines[i].indexOf('#');
      const line = (hash === -1 ? lines[i] : lines[i].slice(0, hash)).trim();
      if (line === '') continue;
      const eq = line.indexOf('=');
      if (eq <= 0) {
        errors.add(`line ${i + 1}: expected name=value, got ${quote(line)}`);
        continue;
      }
      const name = line.slice(0, eq).trim();
      if (!want.has(name)) continue;
      const raw = line.slice(eq + 1).trim();
      if (!NUMBER_RE.test(raw)) errors.add(`line ${i + 1}: ${name}: not a number: ${quote(raw)}`);
      else if (bounded(Number(raw), name, errors)) values.set(name, Number(raw));
    }
  }
  return { values: Object.fromEntries(values), errors: errors.done() };
}

/**
 * Reads `{labels}` from `s` at `i` (at the `{`): label values are quoted strings whose escapes (`\\`, `\"`, `\n`)
 * may hide `}`, `,` or spaces. Returns the index after the `}`, or -1 when malformed.
 */
function skipLabels(s: string, i: number): number {
  let p = i + 1;
  const ws = () => {
    while (s[p] === ' ' || s[p] === '\t') p++;
  };
  for (;;) {
    ws();
    if (s[p] === '}') return p + 1;
    if (s[p] === '"') {
      p = skipQuoted(s, p); // a quoted label name (the newer exposition format)
      if (p < 0) return -1;
    } else {
      const m = PROM_LABEL_RE.exec(s.slice(p, p + 1024));
      if (!m) return -1;
      p += m[0].length;
    }
    ws();
    if (s[p] !== '=') return -1;
    p++;
    ws();
    if (s[p] !== '"') return -1;
    p = skipQuoted(s, p);
    if (p < 0) return -1;
    ws();
    if (s[p] === ',') p++;
    else if (s[p] !== '}') return -1;
  }
}

/** The index after the closing quote of the string starting at `i`, or -1. */
function skipQuoted(s: string, i: number): number {
  for (let p = i + 1; p < s.length; p++) {
    if (s[p] === '\\') p++;
    else if (s[p] === '"') return p + 1;
  }
  return -1;
}

/**
 * Prometheus text exposition: `name{labels} value [timestamp]` lines; `#` lines (HELP, TYPE, comments) and other
 * names are ignored. A name's value is the sum of its samples over all label sets; NaN and ±Inf samples are skipped.
 */
export function parsePrometheusText(input: string, names: readonly string[]): ParsedSignals {
  const want = wanted(names);
  const errors = new Errors();
  const sums = new Map<string, number>();
  const t = cut(input, MAX_HTTP_BYTES, errors);
  const lines = t.split(/\r?\n|\r/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = PROM_NAME_RE.exec(line.slice(0, 256));
    // A name in quotes (`{"a.b"}`) cannot be a configured signal name: nothing to take from that line.
    if (!m) {
      if (!line.startsWith('{')) errors.add(`line ${i + 1}: not a metric line: ${quote(line)}`);
      continue;
    }
    const name = m[0];
    if (!want.has(name)) continue;
    let p = name.length;
    if (line[p] === '{') {
      p = skipLabels(line, p);
      if (p < 0) {
        errors.add(`line ${i + 1}: ${name}: malformed labels`);
        continue;
      }
    }
    const rest = line.slice(p);
    if (rest !== '' && rest[0] !== ' ' && rest[0] !== '\t') {
      errors.add(`line ${i + 1}: ${name}: malformed sample`);
      continue;
    }
    // value, an optional timestamp, and an optional OpenMetrics exemplar (`# {…} v`) ignored.
    const parts = rest.trim().split(/[ \t]+/);
    const hash = parts.indexOf('#');
    const fields = hash === -1 ? parts : parts.slice(0, hash);
    const [raw, ts] = fields;
    if (fields.length < 1 || fields.length > 2 || (ts !== undefined && !NUMBER_RE.test(ts))) {
      errors.add(`line ${i + 1}: ${name}: expected a value and an optional timestamp`);
      continue;
    }
    if (PROM_NON_FINITE.test(raw)) continue;
    if (!NUMBER_RE.test(raw)) {
      errors.add(`line ${i + 1}: ${name}: not a number: ${quote(raw)}`);
      continue;
    }
    sums.set(name, (sums.get(name) ?? 0) + Number(raw));
  }
  const values = new Map<string, number>();
  for (const [n, v] of sums) if (bounded(v, n, errors)) values.set(n, v);
  return { values: Object.fromEntries(values), errors: errors.done() };
}

/** A source failed (its values are left out): why, in one line. */
class SourceError extends Error {}

/**
 * Runs an exec source: `/bin/sh -c` in its own process group, with the component's cwd and environment. Past the
 * timeout or MAX_EXEC_OUTPUT bytes of stdout the group is killed; a non-zero exit fails the source too.
 */
export function runExecSource(
  cmd: string,
  opts: { cwd: string; env: Record<string, string>; timeout: number; maxBytes?: number },
): Promise<string> {
  const max = opts.maxBytes ?? MAX_EXEC_OUTPUT;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let stderr = '';
    let settled = false;
    let child: ReturnType<typeof spawn> | undefined;
    const kill = () => {
      try {
        if (child?.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {}
    };
    const fail = (why: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      kill();
      reject(new SourceError(why));
    };
    const timer = setTimeout(() => fail(`timed out after ${opts.timeout} ms`), opts.timeout);
    try {
      child = spawn('/bin/sh', ['-c', cmd], {
        cwd: opts.cwd,
        env: { ...process.env, ...opts.env },
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (e) {
      fail(`cannot start: ${(e as Error).message}`);
      return;
    }
    child.stdout?.on('data', (d: Buffer) => {
      size += d.length;
      if (size > max) fail(`output larger than ${max} bytes`);
      else chunks.push(d);
    });
    child.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d).slice(-300);
    });
    child.on('error', (e) => fail(`cannot start: ${e.message}`));
    child.on('close', (code, signal) => {
      if (code !== 0) return fail(`exit ${code ?? signal}${stderr ? `: ${stderr.trim().slice(-200)}` : ''}`);
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
  });
}

/** Reads a file source: a regular file of at most `max` bytes (a FIFO or device would block or never end). */
export async function readFileSource(path: string, max = MAX_FILE_BYTES): Promise<string> {
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    throw new SourceError((e as Error).message);
  }
  try {
    if (!(await fh.stat()).isFile()) throw new SourceError(`${path} is not a regular file`);
    const buf = Buffer.alloc(max + 1);
    let n = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
      if (n > max) throw new SourceError(`${path} is larger than ${max} bytes`);
    }
    return buf.subarray(0, n).toString('utf8');
  } finally {
    await fh.close();
  }
}

/** Fetches an http source: a 2xx answer of at most `max` bytes, the whole exchange within `timeout`. */
export async function fetchHttpSource(url: string, timeout: number, max = MAX_HTTP_BYTES): Promise<string> {
  const started = Date.now();
  try {
    const res = await request(url, { timeoutMs: timeout });
    if (res.status < 200 || res.status >= 300) {
      res.body.destroy();
      throw new SourceError(`HTTP ${res.status}`);
    }
    return await text(res, max);
  } catch (e) {
    if (e instanceof SourceError) throw e;
    throw new SourceError(
      Date.now() - started >= timeout ? `timed out after ${timeout} ms` : (e as Error).message,
    );
  }
}

/** One source's values; a failure is an error and no values. */
export async function readSource(
  src: SignalSourceConfig,
  cwd: string,
  env: Record<string, string>,
): Promise<ParsedSignals & { failed?: string }> {
  try {
    if (src.kind === 'http')
      return parsePrometheusText(await fetchHttpSource(src.http, src.timeout), src.names);
    const out =
      src.kind === 'exec'
        ? await runExecSource(src.exec, { cwd, env, timeout: src.timeout })
        : await readFileSource(src.file);
    return parseSignalText(out, src.names);
  } catch (e) {
    return { values: {}, errors: [], failed: (e as Error).message };
  }
}

const describe = (s: SignalSourceConfig) =>
  s.kind === 'exec' ? `exec ${s.exec}` : s.kind === 'file' ? `file ${s.file}` : `http ${s.http}`;

interface ComponentSignals {
  lastAt: number | null;
  pending: SignalSample | null;
  running: Promise<SignalSample | null> | null;
}

/**
 * The agent's signal samples, in memory (a restarted agent simply samples again). `sample` measures when the
 * interval has passed (or when forced, in probation); `pending` is the sample the next check-in carries, until
 * `sent` clears it after a check-in with it succeeded. Components without `signals` are never sampled.
 */
export class SignalSampler {
  private readonly state = new Map<string, ComponentSignals>();

  /** `envOf`: the environment of the component's checks (transaction-runner.ts componentEnv). */
  constructor(
    private readonly log: SignalLog,
    private readonly envOf: (comp: ComponentConfig) => Record<string, string>,
  ) {}

  private of(name: string): ComponentSignals {
    let s = this.state.get(name);
    if (!s) {
      s = { lastAt: null, pending: null, running: null };
      this.state.set(name, s);
    }
    return s;
  }

  /** Whether `comp` is due for a sample at `now`. */
  due(comp: ComponentConfig, now: number): boolean {
    if (!comp.signals) return false;
    const s = this.of(comp.name);
    return s.lastAt === null || now - s.lastAt >= comp.signals.interval;
  }

  /**
   * Takes a sample when due (always with `force`): every source at once, each within its own timeout. Never
   * throws; a sample already being taken is shared rather than started twice.
   */
  async sample(comp: ComponentConfig, now = Date.now(), force = false): Promise<SignalSample | null> {
    const cfg = comp.signals;
    if (!cfg) return null;
    const s = this.of(comp.name);
    if (s.running && !force) return s.running;
    // A forced sample (probation) must describe the release now running: one already in flight may have been
    // started before the switch, so wait for it and take a fresh one.
    if (s.running) await s.running.catch(() => null);
    if (!force && !this.due(comp, now)) return null;
    s.lastAt = now;
    s.running = this.measure(comp, cfg, now).finally(() => {
      s.running = null;
    });
    return s.running;
  }

  private async measure(comp: ComponentConfig, cfg: SignalsConfig, at: number): Promise<SignalSample> {
    const env = this.envOf(comp);
    const cwd = checkCwd(comp, env);
    const results = await Promise.all(cfg.sources.map((src) => readSource(src, cwd, env)));
    const values: Record<string, number> = {};
    let n = 0;
    results.forEach((r, i) => {
      const source = describe(cfg.sources[i]);
      if (r.failed)
        this.log.warn(
          { component: comp.name, source, err: r.failed },
          'signal source failed; its values are left out',
        );
      else if (r.errors.length)
        this.log.warn(
          { component: comp.name, source, errors: r.errors },
          'signal source output partly unreadable',
        );
      for (const [k, v] of Object.entries(r.values))
        if (n < MAX_SIGNALS && !Object.hasOwn(values, k)) {
          Object.defineProperty(values, k, {
            value: v,
            enumerable: true,
            writable: true,
            configurable: true,
          });
          n++;
        }
    });
    const sample: SignalSample = { at, values };
    this.of(comp.name).pending = sample;
    return sample;
  }

  /** The sample the next check-in should carry for `name` (null: none new). */
  pending(name: string): SignalSample | null {
    return this.state.get(name)?.pending ?? null;
  }

  /** A check-in carrying `sample` succeeded: it is not sent again (unless a newer one replaced it meanwhile). */
  sent(name: string, sample: SignalSample): void {
    const s = this.state.get(name);
    if (s && s.pending === sample) s.pending = null;
  }
}
