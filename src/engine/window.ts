// Maintenance windows: five-field cron + duration in an IANA timezone. Cron starts are local wall-clock
// times of that zone, so windows follow DST changes. Two rules make DST explicit:
// - a start that falls in the spring-forward gap (e.g. 02:30 in Europe/Berlin on the last Sunday of
//   March) opens at the first instant after the gap (03:00 CEST), as Vixie cron and systemd do, so a
//   night's window is never silently lost;
// - a start that happens twice in the autumn fall-back (02:30 on the last Sunday of October) opens once,
//   at its first occurrence (CEST).
// The duration is elapsed time, so a 2h window is 2h long even across a change.
// Occurrences are computed day by day with date arithmetic (no minute scanning), so checking a window
// costs a few Intl calls, not thousands.
import type { WindowSpec } from './plan.ts';

const MINUTE = 60_000;
const DAY = 86_400_000;

interface CronField {
  any: boolean;
  values: Set<number>;
  sorted: number[];
}

function parseField(src: string, min: number, max: number): CronField {
  const values = new Set<number>();
  const any = src === '*';
  for (const part of src.split(',')) {
    const m = /^(\*|\d+)(?:-(\d+))?(?:\/(\d+))?$/.exec(part);
    if (!m) throw new Error(`invalid cron field "${src}"`);
    const lo = m[1] === '*' ? min : Number(m[1]);
    const hi = m[2] !== undefined ? Number(m[2]) : m[1] === '*' || m[3] ? max : lo;
    const stepBy = m[3] ? Number(m[3]) : 1;
    if (lo < min || hi > max || lo > hi || stepBy < 1)
      throw new Error(`cron field "${src}" out of range ${min}-${max}`);
    for (let v = lo; v <= hi; v += stepBy) values.add(v);
  }
  return { any, values, sorted: [...values].sort((a, b) => a - b) };
}

export interface Cron {
  minute: CronField;
  hour: CronField;
  dom: CronField;
  month: CronField;
  dow: CronField;
}

const cronCache = new Map<string, Cron>();

/** Parses "m h dom mon dow" (numbers, *, ranges, lists, steps; Sunday = 0 or 7). */
export function parseCron(src: string): Cron {
  const cached = cronCache.get(src);
  if (cached) return cached;
  const f = src.trim().split(/\s+/);
  if (f.length !== 5) throw new Error(`cron "${src}" must have five fields`);
  const dow = parseField(f[4], 0, 7);
  if (dow.values.has(7)) dow.values.add(0);
  const cron = {
    minute: parseField(f[0], 0, 59),
    hour: parseField(f[1], 0, 23),
    dom: parseField(f[2], 1, 31),
    month: parseField(f[3], 1, 12),
    dow,
  };
  if (cronCache.size > 1000) cronCache.clear();
  cronCache.set(src, cron);
  return cron;
}

const fmtCache = new Map<string, Intl.DateTimeFormat>();
function formatter(tz: string): Intl.DateTimeFormat {
  let fmt = fmtCache.get(tz);
  if (!fmt) {
    fmt = new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    fmtCache.set(tz, fmt);
  }
  return fmt;
}

/** The zone's offset from UTC at instant t, in ms (local = utc + offset). */
export function zoneOffset(t: number, tz: string): number {
  const p: Record<string, number> = {};
  for (const part of formatter(tz).formatToParts(t)) if (part.type !== 'literal') p[part.type] = +part.value;
  const local = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
  return local - (t - (((t % 1000) + 1000) % 1000));
}

/** Local wall-clock fields of instant t in tz. */
function localDay(t: number, tz: string): number {
  const local = t + zoneOffset(t, tz);
  return Math.floor(local / DAY) * DAY; // local midnight, as a UTC-based day number × DAY
}

const has = (f: CronField, v: number) => f.any || f.values.has(v);

function dayMatches(c: Cron, dayStart: number): boolean {
  const d = new Date(dayStart);
  const month = d.getUTCMonth() + 1;
  if (!has(c.month, month)) return false;
  const dom = d.getUTCDate();
  const dow = d.getUTCDay();
  // Standard cron: when both day fields are restricted, either may match.
  if (!c.dom.any && !c.dow.any) return c.dom.values.has(dom) || c.dow.values.has(dow);
  return has(c.dom, dom) && has(c.dow, dow);
}

/**
 * Converts a local wall-clock time (ms since epoch as if the zone were UTC) to an instant. A time in the
 * spring-forward gap maps to the first instant after the gap; an ambiguous one to its first occurrence.
 */
export function localToInstant(local: number, tz: string): number {
  // The offsets just before and after the wall time bracket any change near it.
  const o1 = zoneOffset(local - DAY / 2, tz);
  const o2 = zoneOffset(local + DAY / 2, tz);
  const a = local - o1;
  const b = local - o2;
  const okA = a + zoneOffset(a, tz) === local;
  const okB = b + zoneOffset(b, tz) === local;
  if (okA && okB) return Math.min(a, b); // ambiguous (fall back): the first occurrence
  if (okA) return a;
  if (okB) return b;
  // In the gap: the change happens between b and a (o2 > o1); its instant is the first after the gap.
  let lo = Math.min(a, b);
  let hi = Math.max(a, b);
  while (hi - lo > MINUTE) {
    const mid = Math.floor((lo + hi) / 2 / MINUTE) * MINUTE;
    if (zoneOffset(mid, tz) === o1) lo = mid;
    else hi = mid;
  }
  return hi;
}

/** Start instants of the window's occurrences on one local day, in order. */
function startsOn(c: Cron, day: number, tz: string): number[] {
  if (!dayMatches(c, day)) return [];
  const hours = c.hour.any ? Array.from({ length: 24 }, (_, i) => i) : c.hour.sorted;
  const minutes = c.minute.any ? Array.from({ length: 60 }, (_, i) => i) : c.minute.sorted;
  // Fast path: no offset change within this local day, so wall time maps by one constant offset.
  const o1 = zoneOffset(day - zoneOffset(day, tz), tz);
  const o2 = zoneOffset(day + DAY - zoneOffset(day + DAY, tz), tz);
  const out: number[] = [];
  let last = Number.NEGATIVE_INFINITY;
  for (const h of hours)
    for (const m of minutes) {
      const local = day + h * 3_600_000 + m * MINUTE;
      const t = o1 === o2 ? local - o1 : localToInstant(local, tz);
      if (t > last) out.push(t); // gap starts can collapse onto one instant: open once
      last = Math.max(last, t);
    }
  return out;
}

const MAX_DAYS = 400; // crons like "last Sunday of March" can be up to a year apart

/** Whether the window is open at `now`, and the next instant that may change the answer. */
export function windowOpen(
  w: WindowSpec,
  now: number,
): { open: boolean; nextChange: number; openedAt: number | null } {
  const cron = parseCron(w.cron);
  const today = localDay(now, w.timezone);
  const back = Math.ceil(w.durationMs / DAY) + 1;
  let openedAt: number | null = null;
  let closesAt = Number.NEGATIVE_INFINITY;
  for (let d = today - back * DAY; d <= today + DAY; d += DAY) {
    for (const t of startsOn(cron, d, w.timezone)) {
      if (t <= now && now < t + w.durationMs) {
        if (openedAt === null || t < openedAt) openedAt = t;
        closesAt = Math.max(closesAt, t + w.durationMs);
      }
    }
  }
  if (openedAt !== null) return { open: true, nextChange: closesAt, openedAt };
  for (let i = 0, d = today; i < MAX_DAYS; i++, d += DAY) {
    for (const t of startsOn(cron, d, w.timezone))
      if (t > now) return { open: false, nextChange: t, openedAt: null };
  }
  return { open: false, nextChange: now + MAX_DAYS * DAY, openedAt: null };
}

/** True when some window occurrence starts in the local minute containing instant t. */
export function cronMatches(c: Cron, t: number, tz: string): boolean {
  const minute = Math.floor(t / MINUTE) * MINUTE;
  for (const s of startsOn(c, localDay(t, tz), tz)) if (s >= minute && s < minute + MINUTE) return true;
  return false;
}
