// Prometheus metrics exposed at /metrics.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

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
}

/** A fresh registry per server, so several servers in one process (tests, demo) do not collide. */
export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
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
    devices: new Gauge({ name: 'ringfence_devices', help: 'Enrolled devices', registers: [registry] }),
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
  };
}
