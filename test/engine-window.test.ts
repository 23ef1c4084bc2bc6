// Maintenance windows checked against a brute-force reference (scan every minute back for a local start)
// in zones and seasons without a DST change nearby, plus the exact DST rules for Europe/Berlin.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { windowOpen } from '../src/engine/window.ts';

const MIN = 60_000;

function localMinuteFields(t: number, tz: string) {
  const f = new Intl.DateTimeFormat('en-US', {
    timeZone: tz,
    hourCycle: 'h23',
    minute: 'numeric',
    hour: 'numeric',
    day: 'numeric',
    month: 'numeric',
    weekday: 'short',
  });
  const p: Record<string, string> = {};
  for (const part of f.formatToParts(t)) p[part.type] = part.value;
  const dow = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'].indexOf(p.weekday);
  return { minute: +p.minute, hour: +p.hour, day: +p.day, month: +p.month, dow };
}

/** Reference: open iff some minute in (now - duration, now] is a local cron start (simple crons only). */
function reference(
  cron: { minute: number; hour: number | '*'; dow: number | '*' },
  durationMs: number,
  tz: string,
  now: number,
): boolean {
  for (let t = Math.floor(now / MIN) * MIN; t > now - durationMs; t -= MIN) {
    const l = localMinuteFields(t, tz);
    if (
      l.minute === cron.minute &&
      (cron.hour === '*' || l.hour === cron.hour) &&
      (cron.dow === '*' || l.dow === cron.dow)
    )
      return true;
  }
  return false;
}

describe('maintenance windows', () => {
  it('agree with a minute-by-minute reference away from DST changes', () => {
    const zones = [
      'UTC',
      'Asia/Tokyo',
      'Asia/Kolkata',
      'Europe/Berlin',
      'America/New_York',
      'Australia/Sydney',
    ];
    fc.assert(
      fc.property(
        fc.constantFrom(...zones),
        fc.integer({ min: 0, max: 59 }),
        fc.oneof(fc.integer({ min: 0, max: 23 }), fc.constant('*' as const)),
        fc.oneof(fc.integer({ min: 0, max: 6 }), fc.constant('*' as const)),
        fc.integer({ min: 1, max: 6 * 60 }),
        fc.constantFrom(
          Date.parse('2026-06-10T00:00:00Z'),
          Date.parse('2026-12-10T00:00:00Z'),
          Date.parse('2026-01-20T00:00:00Z'),
        ),
        fc.integer({ min: 0, max: 7 * 24 * 60 }),
        (tz, minute, hour, dow, durMin, base, offsetMin) => {
          const now = base + offsetMin * MIN + 17_000;
          const spec = { cron: `${minute} ${hour} * * ${dow}`, durationMs: durMin * MIN, timezone: tz };
          const got = windowOpen(spec, now);
          assert.equal(
            got.open,
            reference({ minute, hour, dow }, durMin * MIN, tz, now),
            JSON.stringify({ spec, now: new Date(now) }),
          );
          assert.ok(got.nextChange > now, 'the next change is in the future');
          // Just before the next change the answer is unchanged, and at it the window opens (if closed).
          if (!got.open) assert.equal(windowOpen(spec, got.nextChange).open, true);
          else assert.equal(windowOpen(spec, got.nextChange - 1).open, true);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('Europe/Berlin spring forward: starts in the gap move to 03:00 CEST; others keep wall time', () => {
    const w = (cron: string) => ({ cron, durationMs: 3_600_000, timezone: 'Europe/Berlin' });
    const before = Date.parse('2026-03-28T22:00:00Z');
    assert.equal(windowOpen(w('0 2 * * *'), before).nextChange, Date.parse('2026-03-29T01:00:00Z'));
    assert.equal(windowOpen(w('59 2 * * *'), before).nextChange, Date.parse('2026-03-29T01:00:00Z'));
    assert.equal(
      windowOpen(w('0 1 * * *'), before).nextChange,
      Date.parse('2026-03-29T00:00:00Z'),
      '01:00 CET',
    );
    assert.equal(
      windowOpen(w('0 3 * * *'), before).nextChange,
      Date.parse('2026-03-29T01:00:00Z'),
      '03:00 CEST',
    );
    // "*/15 2 * * *" has four starts in the gap: they collapse into one opening, not four.
    const q = windowOpen(
      { cron: '*/15 2 * * *', durationMs: 10 * MIN, timezone: 'Europe/Berlin' },
      Date.parse('2026-03-29T01:05:00Z'),
    );
    assert.equal(q.open, true);
    assert.equal(q.nextChange, Date.parse('2026-03-29T01:10:00Z'));
  });

  it('Europe/Berlin fall back: a start in the repeated hour opens once', () => {
    const spec = { cron: '15 2 * * *', durationMs: 30 * MIN, timezone: 'Europe/Berlin' };
    assert.equal(windowOpen(spec, Date.parse('2026-10-25T00:20:00Z')).open, true, 'first 02:15 (CEST)');
    assert.equal(
      windowOpen(spec, Date.parse('2026-10-25T01:20:00Z')).open,
      false,
      'second 02:15 (CET) skipped',
    );
  });

  it('finds rare windows up to a year ahead (29 February)', () => {
    const spec = { cron: '0 0 29 2 *', durationMs: 3_600_000, timezone: 'UTC' };
    assert.equal(
      windowOpen(spec, Date.parse('2027-06-01T00:00:00Z')).nextChange,
      Date.parse('2028-02-29T00:00:00Z'),
    );
  });
});
