// Maintenance windows: five-field cron + duration in an IANA timezone. Evaluated on local wall-clock
// minutes of that zone, so windows follow DST changes (a 02:00 window on a spring-forward day is skipped,
// as a local 02:00 does not exist).
import type { WindowSpec } from './plan.ts';

const MINUTE = 60_000;

interface CronField {
  any: boolean;
  values: Set<number>;
}

function parseField(src: string, min: number, max: number): CronField {
  if (src === '*') return { any: true, values: new Set() };
  const values = new Set<number>();
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
  return { any: false, values };
}

export interface Cron {
  minute: CronField;
  hour: CronField;
  dom: CronField;
  month: CronField;
  dow: CronField;
}

/** Parses "m h dom mon dow" (numbers, *, ranges, lists, steps; Sunday = 0 or 7). */
export function parseCron(src: string): Cron {
  const f = src.trim().split(/\s+/);
  if (f.length !== 5) throw new Error(`cron "${src}" must have five fields`);
  const dow = parseField(f[4], 0, 7);
  if (dow.values.has(7)) dow.values.add(0);
  return {
    minute: parseField(f[0], 0, 59),
    hour: parseField(f[1], 0, 23),
    dom: parseField(f[2], 1, 31),
    month: parseField(f[3], 1, 12),
    dow,
  };
}

const fmtCache = new Map<string, Intl.DateTimeFormat>();
function localParts(
  t: number,
  tz: string,
): { minute: number; hour: number; day: number; month: number; dow: number } {
  let fmt = fmtCache.get(tz);
  if (!fmt) {
    fmt = new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      hourCycle: 'h23',
      minute: 'numeric',
      hour: 'numeric',
      day: 'numeric',
      month: 'numeric',
      weekday: 'short',
    });
    fmtCache.set(tz, fmt);
  }
  const p: Record<string, string> = {};
  for (const part of fmt.formatToParts(t)) p[part.type] = part.value;
  const dows: Record<string, number> = { Sun: 0, Mon: 1, Tue: 2, Wed: 3, Thu: 4, Fri: 5, Sat: 6 };
  return { minute: +p.minute, hour: +p.hour, day: +p.day, month: +p.month, dow: dows[p.weekday] };
}

const has = (f: CronField, v: number) => f.any || f.values.has(v);

/** True when the local minute containing instant t (in tz) is a cron start. */
export function cronMatches(c: Cron, t: number, tz: string): boolean {
  const l = localParts(t, tz);
  if (!has(c.minute, l.minute) || !has(c.hour, l.hour) || !has(c.month, l.month)) return false;
  // Standard cron: when both day fields are restricted, either may match.
  if (!c.dom.any && !c.dow.any) return c.dom.values.has(l.day) || c.dow.values.has(l.dow);
  return has(c.dom, l.day) && has(c.dow, l.dow);
}

/** Whether the window is open at `now`, and the next instant that may change the answer. */
export function windowOpen(w: WindowSpec, now: number): { open: boolean; nextChange: number } {
  const cron = parseCron(w.cron);
  const start = Math.floor(now / MINUTE) * MINUTE;
  // Open if some start minute lies in (now - duration, now].
  for (let t = start; t > now - w.durationMs; t -= MINUTE) {
    if (cronMatches(cron, t, w.timezone)) return { open: true, nextChange: t + w.durationMs };
  }
  // Closed: find the next start minute, scanning up to 8 days (hour-aligned skips keep this cheap).
  const limit = now + 8 * 86_400_000;
  for (let t = start + MINUTE; t < limit; t += MINUTE) {
    if (cronMatches(cron, t, w.timezone)) return { open: false, nextChange: t };
  }
  return { open: false, nextChange: limit };
}
