// The rehearsal's simulated devices. They behave like the agent: they act only when they check in (pull),
// install beside the running release, judge health during probation, roll back on their own, and report at
// once (the agent checks in again right after a transaction). Per-device state lives in typed arrays, so a
// fleet of millions fits; the faults a device carries (faults.ts) bend what it does.
import type { Command } from '../engine/rollout.ts';
import type { FailureClass } from '../protocol/failure-class.ts';
import type { EventQueue } from './event-queue.ts';
import { F_CRASH, F_FAIL, F_FLAKY, F_NEVER, F_OFFLINE, F_SLOW, type FaultAssignment } from './faults.ts';
import type { Rng } from './prng.ts';
import type { Tally } from './tally.ts';
import type { TimingModel } from './timing.ts';

// Device event kinds (low 3 bits of a queued payload; the device index above them).
const EV_CHECKIN = 0;
const EV_OUTCOME = 1;

// Desired state as the device sees it on its next check-in.
const WANT_NONE = 0;
const WANT_TARGET = 1;
const WANT_REVERT = 2;

// The report a device has waiting to send.
const REP_NONE = 0;
const REP_OK = 1; // the release passed probation and was committed
const REP_FAILED = 2; // the release failed (crash loop or health) and the device rolled back on its own
const REP_REVERTED = 3; // the device went back to its previous release because the server asked

/** A device's report as it reaches the control plane. */
export interface SentReport {
  kind: 'committed' | 'failed' | 'reverted';
  reason: string | null;
  /** The failure's class, as a real agent sends it (the engine decides retries by class, never by the reason). */
  failureClass: FailureClass | null;
}

/** Where a device's report goes when it is sent: the control plane. */
export type DeliverReport = (i: number, report: SentReport, t: number) => void;

/** The simulated fleet: its state, its check-in schedule, and its behaviour at each event. */
export class SimDevices {
  private readonly phase: Float64Array; // check-in phase within the poll interval
  private readonly want: Uint8Array;
  private readonly running: Uint8Array; // 1 while the device runs the release
  private readonly received: Uint8Array;
  private readonly installing: Uint8Array;
  private readonly pending: Uint8Array; // report to send
  private readonly reportNotBefore: Float64Array;
  private readonly scheduled: Uint8Array; // a check-in event is queued
  // When the device last switched to the release and last left it (NaN: never); kept only when signals are
  // simulated (see `trackRelease`), so that a sample knows which release its window ran.
  private readonly installedAt: Float64Array;
  private readonly leftAt: Float64Array;
  private readonly poll: number;

  constructor(
    n: number,
    private readonly sim: {
      start: number;
      timing: TimingModel;
      faults: FaultAssignment;
      rng: Rng;
      queue: EventQueue;
      tally: Tally;
      deliver: DeliverReport;
      /** Keep when each device switched releases (signals need it; a fleet without them saves the memory). */
      trackRelease?: boolean;
    },
  ) {
    this.poll = sim.timing.pollMs;
    this.phase = new Float64Array(n);
    for (let i = 0; i < n; i++) this.phase[i] = Math.floor(sim.rng.next() * this.poll);
    this.want = new Uint8Array(n);
    this.running = new Uint8Array(n);
    this.received = new Uint8Array(n);
    this.installing = new Uint8Array(n);
    this.pending = new Uint8Array(n);
    this.reportNotBefore = new Float64Array(n);
    this.scheduled = new Uint8Array(n);
    const tracked = sim.trackRelease ? n : 0;
    this.installedAt = new Float64Array(tracked).fill(Number.NaN);
    this.leftAt = new Float64Array(tracked).fill(Number.NaN);
  }

  /** Whether device i runs the release now (or is installing it). */
  runsRelease(i: number): boolean {
    return this.running[i] === 1;
  }

  /**
   * Whether device i ran the release through the check-in window that ends at `c` (it switched before c and
   * had not left it by then). Needs `trackRelease`.
   */
  ranReleaseBefore(i: number, c: number): boolean {
    const on = this.installedAt[i];
    if (Number.isNaN(on) || on >= c) return false;
    const off = this.leftAt[i];
    return Number.isNaN(off) || off < on || off >= c;
  }

  /**
   * When device i last checked in and reached the server at or before t, or null: none yet. The simulation
   * only queues check-ins that change something; an idle device still polls on its phase, so its latest
   * check-in follows from the phase. An offline device's check-ins are lost, and a flaky link drops each with
   * its loss probability (drawn from `rng`, the signals' own stream).
   */
  lastCheckin(i: number, t: number, rng: Rng): number | null {
    const base = this.sim.start + this.phase[i];
    if (t < base) return null;
    let c = base + Math.floor((t - base) / this.poll) * this.poll;
    const f = this.sim.faults;
    const m = f.mask[i];
    if (m & F_OFFLINE && c - this.sim.start < f.offlineUntilMs[i]) return null;
    if (m & F_FLAKY) {
      if (f.loss[i] >= 1) return null;
      // Bounded: a check-in that gets through within a thousand tries is all but certain below 100 % loss.
      for (let k = 0; k < 1000 && rng.next() < f.loss[i]; k++) c -= this.poll;
      if (c < base) return null;
    }
    return c;
  }

  /** What the server now wants of device i; the device learns it at its next check-in at or after t. */
  command(i: number, kind: Command['kind'], t: number): void {
    if (kind === 'offer') this.want[i] = WANT_TARGET;
    else if (kind === 'revert') this.want[i] = WANT_REVERT;
    else this.want[i] = WANT_NONE;
    this.schedule(i, t);
  }

  /** Runs one queued device event (a check-in, or the end of an install's probation) at virtual time t. */
  handle(payload: number, t: number): void {
    const i = payload >> 3;
    if ((payload & 7) === EV_CHECKIN) this.checkin(i, t);
    else this.outcome(i, t);
  }

  /** When device i next checks in at or after t: on its own phase of the poll interval. */
  private nextCheckin(i: number, t: number): number {
    const base = this.sim.start + this.phase[i];
    if (t <= base) return base;
    return base + Math.ceil((t - base) / this.poll) * this.poll;
  }

  /** Queues device i's next check-in at or after t, unless one is queued already. */
  private schedule(i: number, t: number): void {
    if (this.scheduled[i]) return;
    this.scheduled[i] = 1;
    this.sim.queue.push(this.nextCheckin(i, t), i * 8 + EV_CHECKIN);
  }

  /** The agent checks in again right after a transaction; its poll timer starts over from there. */
  private checkInSoon(i: number, t: number): void {
    this.phase[i] = (t + 1 - this.sim.start) % this.poll;
    this.schedule(i, t + 1);
  }

  /** One device check-in: lost, or send the waiting report, then act on what the server wants. */
  private checkin(i: number, t: number): void {
    this.scheduled[i] = 0;
    if (this.lost(i, t)) return;
    if (this.pending[i] !== REP_NONE) this.sendReport(i, t);
    if (this.installing[i]) return; // the outcome event takes it from here
    if (this.want[i] === WANT_TARGET && !this.received[i] && !this.running[i]) this.install(i, t);
    else if (this.want[i] === WANT_REVERT) this.revert(i, t);
  }

  /** Whether the check-in never reaches the server: the device is offline, or a flaky link drops it. */
  private lost(i: number, t: number): boolean {
    const f = this.sim.faults;
    const m = f.mask[i];
    if (m & F_OFFLINE && t - this.sim.start < f.offlineUntilMs[i]) {
      if (Number.isFinite(f.offlineUntilMs[i])) this.schedule(i, this.sim.start + f.offlineUntilMs[i]);
      return true;
    }
    if (m & F_FLAKY && this.sim.rng.next() < f.loss[i]) {
      this.schedule(i, t + 1);
      return true;
    }
    return false;
  }

  /** Sends the waiting report: lost for good, held back while it is late, or delivered now. */
  private sendReport(i: number, t: number): void {
    if (this.sim.faults.mask[i] & F_NEVER)
      this.pending[i] = REP_NONE; // the report is lost, every time
    else if (t < this.reportNotBefore[i]) this.schedule(i, this.reportNotBefore[i]);
    else this.sim.deliver(i, this.takeReport(i), t);
  }

  /** Takes device i's waiting report off the device. */
  private takeReport(i: number): SentReport {
    const code = this.pending[i];
    this.pending[i] = REP_NONE;
    if (code === REP_OK) return { kind: 'committed', reason: null, failureClass: null };
    if (code === REP_FAILED) {
      const crash = (this.sim.faults.mask[i] & F_CRASH) !== 0;
      return {
        kind: 'failed',
        reason: crash ? 'boot: crash loop' : 'health check failed',
        failureClass: crash ? 'crash-loop' : 'health',
      };
    }
    return { kind: 'reverted', reason: null, failureClass: null };
  }

  /** Pull: stage beside the running release, switch, then probation until the outcome event. */
  private install(i: number, t: number): void {
    const { timing, faults, rng, queue, tally } = this.sim;
    this.received[i] = 1;
    this.installing[i] = 1;
    this.running[i] = 1;
    if (this.installedAt.length) this.installedAt[i] = t;
    tally.installedOn(i);
    const [installMin, installMax] = timing.applyMs;
    const dur = installMin + Math.floor(rng.next() * (installMax - installMin + 1));
    // A crash loop is caught by the boot guard within a few boots; health failures at the end of probation.
    const judged = faults.mask[i] & F_CRASH ? Math.min(timing.healthMs, 3 * 60_000) : timing.healthMs;
    queue.push(t + dur + judged, i * 8 + EV_OUTCOME);
  }

  /** The server asked for the previous release: go back to it (if on the new one) and report at once. */
  private revert(i: number, t: number): void {
    this.want[i] = WANT_NONE;
    this.leaveRelease(i, t);
    this.pending[i] = REP_REVERTED;
    this.reportNotBefore[i] = t + this.reportDelay(i);
    this.checkInSoon(i, t);
  }

  /** The end of an install: a crashing or unhealthy release is rolled back by the device on its own. */
  private outcome(i: number, t: number): void {
    this.installing[i] = 0;
    if (this.sim.faults.mask[i] & (F_CRASH | F_FAIL)) {
      // The device returns to its last known good release on its own.
      this.leaveRelease(i, t);
      this.pending[i] = REP_FAILED;
    } else this.pending[i] = REP_OK;
    this.reportNotBefore[i] = t + this.reportDelay(i);
    if (this.want[i] === WANT_REVERT && this.pending[i] === REP_FAILED) this.want[i] = WANT_NONE; // already back
    this.checkInSoon(i, t);
  }

  /** Device i stops running the release at t, if it was. */
  private leaveRelease(i: number, t: number): void {
    if (!this.running[i]) return;
    this.running[i] = 0;
    if (this.leftAt.length) this.leftAt[i] = t;
    this.sim.tally.rolledBackOn(i);
  }

  /** How late device i's reports arrive (a slow fault). */
  private reportDelay(i: number): number {
    return this.sim.faults.mask[i] & F_SLOW ? this.sim.faults.slowMs[i] : 0;
  }
}
