// Imperative shell around the pure engine: decides when each rollout steps (news, wake time, operator action)
// and serialises the steps; one step (load → step() → persist) is services/rollout-step.ts.
import type { Logger } from 'pino';
import { ACTIVE, type EngineEvent, type RolloutState, type StepOutput } from '../engine/rollout.ts';
import { type Db, inTransaction, type Store } from './db/database.ts';
import { dueRollouts } from './db/rollouts.ts';
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

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly clock: () => number = Date.now,
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
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
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
    return stepWithin(tx, { id, events, actor, now, lock: this.store.dialect === 'postgres' });
  }

  /** Logs the transitions of committed steps and tells the listeners. */
  announce(steps: StepsWithin): void {
    for (const { id, out } of steps) {
      for (const t of out.transitions) this.log.info({ rollout: id, ...t }, `rollout ${id}: ${t.why}`);
      for (const fn of this.listeners) fn(id, out);
    }
  }

  /** Steps every rollout that has news or whose wake time has come. */
  async tick(): Promise<void> {
    const now = this.clock();
    for (const r of await dueRollouts(this.store.db, ACTIVE, now)) {
      // News alone (device reports) waits a few times the last step's cost, so with a large fleet the engine
      // takes at most about a fifth of the server's time and check-ins stay fast. Timers and operator actions
      // are never delayed; a small fleet's steps take milliseconds, so nothing changes there.
      const last = this.lastStep.get(r.id);
      const woke = r.wakeAt !== null && r.wakeAt <= now;
      if (!woke && last && performance.now() - last.at < last.tookMs * 4) continue;
      await this.stepRollout(r.id, [], 'engine');
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
