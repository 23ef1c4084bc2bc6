// Prometheus metrics exposed at /metrics: the process's own counters, and gauges of the database's state
// (rollouts, wave devices, stale devices, lock holders, webhook outbox) computed when scraped. What each means
// and how to alert on it: docs/monitoring.md.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { ASSIGNMENT_STATES } from '../engine/assignment-states.ts';
import type { Transition } from '../engine/rollout.ts';
import type { RolloutStatus } from '../engine/rollout-state.ts';
import type { Store } from './db/database.ts';
import { type FleetCounts, readFleetCounts } from './db/monitoring.ts';

export interface Metrics {
  registry: Registry;
  checkins: Counter;
  checkinSeconds: Histogram;
  reports: Counter<'outcome'>;
  rolloutSteps: Counter;
  devices: Gauge;
  throttled: Counter<'what'>;
  reportsDropped: Counter<'reason'>;
  waitsHeld: Gauge;
  wakeups: Counter;
  /** Rollouts the engine stopped (incidents prevented); count with countHalts. */
  halts: Counter<'reason'>;
  /** Webhook delivery attempts by result: delivered, retried (will try again), failed (gave up). */
  webhookDeliveries: Counter<'result'>;
  /** Webhook events not written to the outbox (reason: outbox-full). */
  webhookEventsDropped: Counter<'reason'>;
}

/** Where the database gauges come from; without it (unit tests) they are not registered. */
export interface MetricsSource {
  store: Store;
  clock: () => number;
  /** The devices' poll interval: a device not seen for STALE_POLLS of them is stale. */
  pollSeconds: number;
  /** How long one reading of the database serves scrapes (default DB_GAUGE_CACHE_MS). */
  cacheMs?: number;
}

/** A device not seen for this many poll intervals counts in ringfence_devices_stale. */
export const STALE_POLLS = 3;
/** Scrapes within this long of a reading reuse it: several Prometheus servers or a short interval cost one read. */
export const DB_GAUGE_CACHE_MS = 5000;

const ROLLOUT_STATUSES: readonly RolloutStatus[] = [
  'pending',
  'running',
  'baking',
  'awaiting-approval',
  'paused',
  'halted',
  'completed',
  'aborted',
  'rolling-back',
  'rolled-back',
];

/** Why the engine stopped a rollout: a small fixed set, so the label stays cheap. */
export const HALT_REASONS = [
  'failure-budget',
  'min-reported',
  'success-gate',
  'metric-gate',
  'evidence-gate',
  'attributed',
  'operator',
  'other',
] as const;
export type HaltReason = (typeof HALT_REASONS)[number];

/** A fresh registry per server, so several servers in one process (tests, demo) do not collide. */
export function createMetrics(source?: MetricsSource): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const read = source ? cachedReader(source) : null;
  const m: Metrics = {
    registry,
    checkins: new Counter({
      name: 'ringfence_checkins_total',
      help: 'Device check-ins',
      registers: [registry],
    }),
    checkinSeconds: new Histogram({
      name: 'ringfence_checkin_seconds',
      help: 'Check-in handling time',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    reports: new Counter({
      name: 'ringfence_reports_total',
      help: 'Transaction reports from devices',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    rolloutSteps: new Counter({
      name: 'ringfence_rollout_steps_total',
      help: 'Engine steps',
      registers: [registry],
    }),
    devices: new Gauge({
      name: 'ringfence_devices',
      help: 'Enrolled devices, not retired',
      registers: [registry],
      // The database's count when there is one, whoever listed the fleet last.
      ...(read && {
        async collect() {
          this.set((await read()).devices);
        },
      }),
    }),
    throttled: new Counter({
      name: 'ringfence_throttled_total',
      help: 'Requests or rows refused by a limit (what: checkin, enroll, auth, connections, reports, audit, wait)',
      labelNames: ['what'],
      registers: [registry],
    }),
    reportsDropped: new Counter({
      name: 'ringfence_reports_dropped_total',
      help: 'Device reports acknowledged but not stored (reason: unoffered, quota)',
      labelNames: ['reason'],
      registers: [registry],
    }),
    waitsHeld: new Gauge({
      name: 'ringfence_waits_held',
      help: 'Wake-up waits (POST /v1/wait) held open by this process',
      registers: [registry],
    }),
    wakeups: new Counter({
      name: 'ringfence_wakeups_total',
      help: 'Held waits answered early because the device has something new',
      registers: [registry],
    }),
    halts: new Counter({
      name: 'ringfence_halts_total',
      help: `Rollouts stopped by a gate or an operator, each an incident kept from the rest of the fleet (reason: ${HALT_REASONS.join(', ')})`,
      labelNames: ['reason'],
      registers: [registry],
    }),
    webhookDeliveries: new Counter({
      name: 'ringfence_webhook_deliveries_total',
      help: 'Webhook delivery attempts (result: delivered, retried, failed = gave up)',
      labelNames: ['result'],
      registers: [registry],
    }),
    webhookEventsDropped: new Counter({
      name: 'ringfence_webhook_events_dropped_total',
      help: 'Webhook events not queued (reason: outbox-full)',
      labelNames: ['reason'],
      registers: [registry],
    }),
  };
  // Zero series from the start, so rate() and alerts see a value before the first increment.
  for (const reason of HALT_REASONS) m.halts.inc({ reason }, 0);
  for (const result of ['delivered', 'retried', 'failed']) m.webhookDeliveries.inc({ result }, 0);
  if (read) registerDatabaseGauges(registry, read);
  return m;
}

/** Counts the step's transitions that stopped a rollout (driver.onStep listener). */
export function countHalts(m: Metrics, transitions: readonly Transition[]): void {
  for (const t of transitions) {
    const reason = haltReason(t);
    if (reason) m.halts.inc({ reason });
  }
}

/**
 * The reason a transition stopped a rollout, or null when it did not. A gate halts to `halted`, or straight to
 * rolling back under `halt-and-rollback`; an operator's rollback of a rollout that was not already halted is a
 * stop too (one already halted was counted when it halted). Pauses and aborts are not halts.
 * Reads the engine's reason text (src/engine/gates.ts): the transition carries no code.
 */
export function haltReason(t: Transition): HaltReason | null {
  const stops = t.to === 'halted' || t.to === 'rolling-back' || t.to === 'rolled-back';
  if (!stops || t.from === t.to || t.from === 'rolling-back' || t.from === 'halted') return null;
  if (/over the failure budget/.test(t.why)) return 'failure-budget';
  // Before min-reported: an inconclusive metric gate (no answer from Prometheus) says "inconclusive" too.
  if (/metric gate/.test(t.why)) return 'metric-gate';
  if (/evidence gate/.test(t.why)) return /^attributed by /.test(t.why) ? 'attributed' : 'evidence-gate';
  if (/inconclusive/.test(t.why)) return 'min-reported';
  if (/% gate/.test(t.why)) return 'success-gate';
  if (t.to !== 'halted') return 'operator'; // a rollback event (`rolled back by …` or the operator's reason)
  return 'other';
}

/** One reading of the database's counts, shared by every gauge of a scrape and by scrapes within `cacheMs`. */
function cachedReader(source: MetricsSource): () => Promise<FleetCounts> {
  const cacheMs = source.cacheMs ?? DB_GAUGE_CACHE_MS;
  // `at`: when the reading finished (null while it runs: every gauge of a scrape, collected at once, shares it).
  let cached: { at: number | null; counts: Promise<FleetCounts> } | null = null;
  return () => {
    // Monotonic time, not the injected clock: the cache bounds the load, whatever time the fleet lives in.
    if (cached && (cached.at === null || performance.now() - cached.at < cacheMs)) return cached.counts;
    const now = source.clock();
    const counts = readFleetCounts(source.store.db, now, now - STALE_POLLS * source.pollSeconds * 1000);
    const entry: { at: number | null; counts: Promise<FleetCounts> } = { at: null, counts };
    counts.then(
      () => {
        entry.at = performance.now();
      },
      // A failed reading is not kept: the scrape fails (Prometheus `up` = 0) and the next one reads again.
      () => {
        if (cached === entry) cached = null;
      },
    );
    cached = entry;
    return counts;
  };
}

/**
 * Gauges read from the database when scraped (collect()). Every replica on one PostgreSQL reports the same
 * values: aggregate them with max(), not sum() (monitoring.md).
 */
function registerDatabaseGauges(registry: Registry, read: () => Promise<FleetCounts>): void {
  new Gauge({
    name: 'ringfence_rollouts',
    help: 'Rollouts by status (every replica reports the same database: max() them)',
    labelNames: ['status'],
    registers: [registry],
    async collect() {
      const c = await read();
      for (const status of ROLLOUT_STATUSES) this.set({ status }, c.rolloutsByStatus.get(status) ?? 0);
    },
  });
  new Gauge({
    name: 'ringfence_wave_devices',
    help: 'Devices per wave and state of each active rollout (rollout: id; wave: name from its plan)',
    labelNames: ['rollout', 'wave', 'state'],
    registers: [registry],
    async collect() {
      const c = await read();
      this.reset(); // a rollout that finished leaves no series behind
      for (const [rollout, waves] of c.startedWaves)
        for (const wave of waves)
          for (const state of ASSIGNMENT_STATES) this.set({ rollout, wave, state }, 0);
      for (const w of c.waveDevices) this.set({ rollout: w.rollout, wave: w.wave, state: w.state }, w.n);
    },
  });
  new Gauge({
    name: 'ringfence_devices_stale',
    help: `Enrolled devices not seen for ${STALE_POLLS} poll intervals`,
    registers: [registry],
    async collect() {
      this.set((await read()).devicesStale);
    },
  });
  new Gauge({
    name: 'ringfence_lock_holders',
    help: 'FleetLock slots held per group (leases not expired)',
    labelNames: ['group'],
    registers: [registry],
    async collect() {
      const c = await read();
      this.reset();
      for (const [group, n] of c.lockHolders) this.set({ group }, n);
    },
  });
  new Gauge({
    name: 'ringfence_lock_slots',
    help: 'FleetLock slots per configured group',
    labelNames: ['group'],
    registers: [registry],
    async collect() {
      const c = await read();
      this.reset();
      for (const [group, n] of c.lockSlots) this.set({ group }, n);
    },
  });
  new Gauge({
    name: 'ringfence_webhook_outbox_pending',
    help: 'Webhook events waiting for delivery (not delivered, not given up)',
    registers: [registry],
    async collect() {
      this.set((await read()).outboxPending);
    },
  });
}
