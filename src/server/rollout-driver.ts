// Imperative shell around the pure engine: decides when each rollout steps (news, wake time, operator action)
// and serialises the steps; one step (load → step() → persist) is services/rollout-step.ts. News is stepped
// at once (nudge) under a cost rule; listeners hear of every committed step (logs, metrics, wake-ups).
import type { Logger } from 'pino';
import { ACTIVE, type EngineEvent, type RolloutState, type StepOutput } from '../engine/rollout.ts';
import { type Db, inTransaction, type Store } from './db/database.ts';
import { dueRollouts } from './db/rollouts.ts';
import { DEFAULT_LIMITS } from './limits.ts';
import { AssignmentCache } from './services/assignment-cache.ts';
import { stepWithin } from './services/rollout-step.ts';

export type StepListener = (rolloutId: number, out: StepOutput) => void;

/** Steps taken inside a larger transaction, announced once it committed. */
export type StepsWithin = Array<{ id: number; out: StepOutput }>;

/** Drives every active rollout: on reports (dirty), on its wake time, and on operator actions. */
export class RolloutDriver {
  private chain: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private listeners: StepListener[] = [];
  private readonly lastStep = new Map<number, { at: number; tookMs: number }>();
  /** A nudge is queued (setImmediate); a pass (tick or nudge) runs; another pass was asked for meanwhile. */
  private nudgeQueued = false;
  private passing = false;
  private passAgain = false;
  /** A pass deferred by the cost rule, at the moment the rule allows it (earlier than the next tick). */
  private deferred: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly clock: () => number = Date.now,
    /** Rollouts' assignments kept between steps (server.yaml `limits.step_cache_assignments`). */
    readonly cache = new AssignmentCache(DEFAULT_LIMITS.stepCacheAssignments),
  ) {}

  /** Calls `fn` after every committed step. */
  onStep(fn: StepListener): void {
    this.listeners.push(fn);
  }

  /** Starts stepping due rollouts every `intervalMs`. */
  start(intervalMs = 250): void {
    this.timer = setInterval(() => {
      this.tick().catch((err) => this.log.error({ err }, 'rollout tick failed'));
    }, intervalMs);
    this.timer.unref();
  }

  /** Stops the timer and waits for the step in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.deferred) clearTimeout(this.deferred);
    this.timer = null;
    this.deferred = null;
    await this.chain.catch(() => {});
  }

  /**
   * Runs `fn` with no other step of this process in progress (PostgreSQL row locks serialise steps across
   * replicas). Not re-entrant: `fn` must not call stepRollout; it steps with `within` and announces after commit.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => {});
    return next;
  }

  /** Steps rollout `id` inside the caller's transaction `tx` (call under `exclusive`; announce after commit). */
  within(tx: Db, id: number, events: EngineEvent[], actor: string, now: number): Promise<StepOutput> {
    const lock = this.store.dialect === 'postgres';
    return stepWithin(tx, { id, events, actor, now, lock, cache: this.cache });
  }

  /** Keeps what committed steps changed, logs their transitions and tells the listeners. */
  announce(steps: StepsWithin): void {
    for (const { id, out } of steps) {
      this.cache.committed(id, out.rollout.status);
      for (const t of out.transitions) this.log.info({ rollout: id, ...t }, `rollout ${id}: ${t.why}`);
      for (const fn of this.listeners) fn(id, out);
    }
  }

  /**
   * Steps due rollouts soon (a committed batch of device reports made them dirty), instead of at the next tick:
   * coalesced (one pass queued at a time), so a flood of reports costs one pass at a time, under tick()'s rules.
   */
  nudge(): void {
    if (this.stopped || this.nudgeQueued) return;
    this.nudgeQueued = true;
    setImmediate(() => {
      this.nudgeQueued = false;
      if (this.stopped) return; // queued before stop(): the store may be closing
      this.tick().catch((err) => this.log.error({ err }, 'rollout nudge failed'));
    });
  }

  /**
   * Steps every rollout that has news or whose wake time has come. Passes never overlap: one asked for while
   * another runs is done once right after it.
   */
  async tick(): Promise<void> {
    if (this.passing) {
      this.passAgain = true;
      return;
    }
    this.passing = true;
    try {
      do {
        this.passAgain = false;
        await this.pass();
      } while (this.passAgain && !this.stopped);
    } finally {
      this.passing = false;
    }
  }

  private async pass(): Promise<void> {
    const now = this.clock();
    let soonest = Number.POSITIVE_INFINITY;
    for (const r of await dueRollouts(this.store.db, ACTIVE, now)) {
      // News alone (device reports) waits a few times the last step's cost, so with a large fleet the engine
      // takes at most about a fifth of the server's time and check-ins stay fast. Timers and operator actions
      // are never delayed; a small fleet's steps take milliseconds, so nothing changes there.
      const last = this.lastStep.get(r.id);
      const woke = r.wakeAt !== null && r.wakeAt <= now;
      const allowedAt = last ? last.at + last.tookMs * 4 : 0;
      if (!woke && performance.now() < allowedAt) {
        soonest = Math.min(soonest, allowedAt);
        continue;
      }
      if (this.stopped) return; // stop() waits for the step in progress, not for steps asked for after it
      await this.stepRollout(r.id, [], 'engine');
    }
    // Deferred news runs when the rule allows it, not a whole (possibly long) tick later.
    if (soonest !== Number.POSITIVE_INFINITY && !this.deferred && !this.stopped) {
      this.deferred = setTimeout(
        () => {
          this.deferred = null;
          this.nudge();
        },
        Math.max(1, Math.ceil(soonest - performance.now())),
      );
      this.deferred.unref();
    }
  }

  /** Runs one step for a rollout in its own transaction, with operator events if any; returns the new state. */
  stepRollout(id: number, events: EngineEvent[], actor: string): Promise<RolloutState> {
    return this.exclusive(async () => {
      const started = performance.now();
      const now = this.clock();
      const out = await inTransaction(this.store, (tx) => this.within(tx, id, events, actor, now));
      const at = performance.now();
      this.lastStep.set(id, { at, tookMs: at - started });
      this.announce([{ id, out }]);
      return out.rollout;
    });
  }
}
