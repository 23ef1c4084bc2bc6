// Offering a running wave's release: report deadlines for offered devices, and which queued devices get
// the offer now, under the wave's concurrency limits, maintenance windows, holds, pins and deferrals.
import type { Plan, WaveSpec, WindowSpec } from './plan.ts';
import { type Assignment, type Command, type DeviceView, NO_REPORT } from './rollout-state.ts';
import { windowOpen } from './window.ts';

export type WindowState = ReturnType<typeof windowOpen>;

/** What offering reads: the plan and wave, the instant, the fleet by id and the windows' state. */
export interface OfferContext {
  plan: Plan;
  wave: WaveSpec;
  now: number;
  device: (id: string) => DeviceView | undefined;
  window: (spec: WindowSpec) => WindowState;
}

/** What offering decided: assignments to store (in order), commands to send, and when to look again. */
export interface OfferDecision {
  changed: Assignment[];
  commands: Command[];
  wakeAt: number | null;
}

const earlier = (at: number | null, other: number): number => (at === null || other < at ? other : at);

/** Window state at `now`, computed once per window: every device of a site shares its window. */
export function windowsAt(now: number): (spec: WindowSpec) => WindowState {
  const cache = new Map<WindowSpec, WindowState>();
  return (spec) => {
    let w = cache.get(spec);
    if (!w) {
      w = windowOpen(spec, now);
      cache.set(spec, w);
    }
    return w;
  };
}

/** The window that governs a device in a wave: its label's window, else the wave's, else the plan's. */
function governingWindow(plan: Plan, wave: WaveSpec, d: DeviceView | undefined): WindowSpec | null {
  const dw = plan.deviceWindows;
  if (dw && d) {
    const name = d.labels[dw.label];
    if (name !== undefined && Object.hasOwn(dw.windows, name)) return dw.windows[name];
  }
  return wave.window;
}

/**
 * Offered devices that have not reported in time count as failed (NO_REPORT). Offers come grouped by the instant
 * they were made: where no maintenance window can govern the wave, a group whose deadline is still ahead is
 * passed over without visiting its devices (a steady step then costs nothing per offered device).
 */
export function expireOffers(
  ctx: OfferContext,
  groups: ReadonlyMap<number | null, Iterable<Assignment>>,
): OfferDecision {
  const { now } = ctx;
  const out: OfferDecision = { changed: [], commands: [], wakeAt: null };
  const windows = Boolean(ctx.plan.deviceWindows) || Boolean(ctx.wave.window);
  for (const [at, group] of groups) {
    if (at === null) continue;
    if (!windows && now < at + ctx.wave.reportDeadlineMs) {
      out.wakeAt = earlier(out.wakeAt, at + ctx.wave.reportDeadlineMs);
      continue;
    }
    for (const a of group) expireOne(ctx, a, out);
  }
  return out;
}

function expireOne(ctx: OfferContext, a: Assignment, out: OfferDecision): void {
  const { now } = ctx;
  if (a.state !== 'offered' || a.offeredAt === null) return;
  // A device waiting for its maintenance window is not late: the deadline never expires while the
  // window is closed. A device that did not report in the window it was offered in gets one more
  // window, with the deadline shortened to fit inside it, so it fails at the latest when that ends.
  let from = a.offeredAt;
  let limit = ctx.wave.reportDeadlineMs;
  // The device is looked up only when a label can pick its window (a partial fleet need not hold it otherwise).
  const spec = ctx.plan.deviceWindows
    ? governingWindow(ctx.plan, ctx.wave, ctx.device(a.deviceId))
    : ctx.wave.window;
  if (spec) {
    const w = ctx.window(spec);
    if (!w.open) {
      out.wakeAt = earlier(out.wakeAt, w.nextChange);
      return;
    }
    if (w.openedAt !== null && w.openedAt > from) {
      from = w.openedAt;
      limit = Math.min(limit, Math.max(w.nextChange - w.openedAt - 60_000, 1));
    }
  }
  const due = from + limit;
  // No report in time is a failure of the release on that device (outcome too: the wave's counts see it).
  if (now >= due)
    out.changed.push({
      ...a,
      state: 'failed',
      outcome: 'failed',
      reportedAt: now,
      reason: NO_REPORT,
      failureClass: 'no-report',
    });
  else out.wakeAt = earlier(out.wakeAt, due);
}

/**
 * A wave's queued assignments in queue order; `devices`, when given, holds each one's device at the same
 * position (a wave that starts and offers in one step has them at hand: no lookup per device).
 */
export interface QueuedList {
  assignments: Iterable<Assignment>;
  devices?: readonly DeviceView[];
}

/**
 * Offers the release to the wave's queued devices that may take it now, in queue order. `offered` is the wave's
 * offered devices: only counted, and visited only under a per-label limit (max_concurrent_per).
 */
export function offerQueued(
  ctx: OfferContext,
  queued: QueuedList,
  offered: { count: number; each: () => Iterable<Assignment> },
  release: { component: string; version: string },
): OfferDecision {
  const { now, wave: spec } = ctx;
  const out: OfferDecision = { changed: [], commands: [], wakeAt: null };
  let inFlight = offered.count;
  const perGroup = new Map<string, number>();
  const groupOf = (d: DeviceView | undefined) =>
    spec.maxConcurrentPer ? (d?.labels[spec.maxConcurrentPer.label] ?? '') : '';
  if (spec.maxConcurrentPer)
    for (const a of offered.each()) {
      const g = groupOf(ctx.device(a.deviceId));
      perGroup.set(g, (perGroup.get(g) ?? 0) + 1);
    }
  const known = queued.devices;
  let i = -1;
  for (const a of queued.assignments) {
    i++;
    if (spec.maxConcurrent !== null && inFlight >= spec.maxConcurrent) break;
    const d = known ? known[i] : ctx.device(a.deviceId);
    if (!d) {
      out.changed.push({ ...a, state: 'skipped', reason: 'device no longer in the fleet' });
      continue;
    }
    if (d.held || d.pinned) continue; // holds and pins win: wait, never force
    if (d.deferredUntil != null && now < d.deferredUntil) {
      out.wakeAt = earlier(out.wakeAt, d.deferredUntil); // deferral wins too, and is no failure
      continue;
    }
    const windowSpec = governingWindow(ctx.plan, spec, d);
    if (windowSpec) {
      const w = ctx.window(windowSpec);
      if (!w.open) {
        out.wakeAt = earlier(out.wakeAt, w.nextChange);
        continue;
      }
    }
    const g = groupOf(d);
    if (spec.maxConcurrentPer && (perGroup.get(g) ?? 0) >= spec.maxConcurrentPer.max) continue;
    out.changed.push(offeredNow(a, now));
    out.commands.push({
      kind: 'offer',
      deviceId: a.deviceId,
      component: release.component,
      version: release.version,
    });
    inFlight++;
    perGroup.set(g, (perGroup.get(g) ?? 0) + 1);
    out.wakeAt = earlier(out.wakeAt, now + spec.reportDeadlineMs);
  }
  return out;
}

/** `a` offered at `now`: the same fields as `{ ...a, state: 'offered', offeredAt: now }`, built without a spread
 * (a wave start builds a million; a literal of known shape is several times cheaper). */
function offeredNow(a: Assignment, now: number): Assignment {
  const o: Assignment = {
    deviceId: a.deviceId,
    wave: a.wave,
    state: 'offered',
    fromVersion: a.fromVersion,
    offeredAt: now,
    reportedAt: a.reportedAt,
    reason: a.reason,
  };
  if ('outcome' in a) o.outcome = a.outcome;
  if ('failureClass' in a) o.failureClass = a.failureClass;
  return o;
}
