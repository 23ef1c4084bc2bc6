// Metric gates' imperative shell: queries Prometheus (`GET {url}/api/v1/query`) for the current wave's gates of
// every running or baking rollout, at each gate's interval, and steps the rollout with the results as engine
// events. The engine (engine/rollout.ts, gates.ts) decides what a result means; this file only fetches values
// and refuses answers it cannot trust, turning them into "no value" (inconclusive) with the reason.
import type { Logger } from 'pino';
import type { Plan } from '../../engine/plan.ts';
import type { MetricEvent, RolloutStatus } from '../../engine/rollout-state.ts';
import type { PrometheusOptions } from '../config.ts';
import { appendAudit } from '../db/audit.ts';
import { inTransaction, type Store } from '../db/database.ts';
import { findRollout, rolloutIdsIn } from '../db/rollouts.ts';
import { PeriodicPass } from '../periodic-pass.ts';
import type { RolloutDriver } from '../rollout-driver.ts';

/** Answers larger than this are refused: an instant query for one number is a few hundred bytes. */
export const ANSWER_MAX_BYTES = 1024 * 1024;

/** A query's outcome: a finite number, or null with why there is none. */
export type QueryResult = { value: number; error?: undefined } | { value: null; error: string };

const fail = (error: string): QueryResult => ({ value: null, error });

/** A Prometheus sample value ("1.5", "NaN", "+Inf") as a finite number, or why not. */
function sampleValue(v: unknown): QueryResult {
  if (!Array.isArray(v) || v.length !== 2 || typeof v[1] !== 'string') return fail('malformed sample');
  const n = Number(v[1]);
  if (v[1].trim() === '' || !Number.isFinite(n))
    return fail(`value ${JSON.stringify(v[1].slice(0, 40))} is not finite`);
  return { value: n };
}

/**
 * Pure: the value of an instant query's JSON answer. Accepted: status success with a scalar, or a vector of
 * exactly one sample; anything else (an error, no series, several series, a matrix, a non-finite value) is
 * no value, with the reason.
 */
export function parseQueryAnswer(text: string): QueryResult {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return fail('answer is not JSON');
  }
  if (typeof doc !== 'object' || doc === null) return fail('answer is not a JSON object');
  const d = doc as { status?: unknown; error?: unknown; data?: { resultType?: unknown; result?: unknown } };
  if (d.status !== 'success')
    return fail(
      `query failed: ${typeof d.error === 'string' ? d.error.slice(0, 200) : 'status not success'}`,
    );
  const type = d.data?.resultType;
  const result = d.data?.result;
  if (type === 'scalar') return sampleValue(result);
  if (type !== 'vector')
    return fail(`result type ${JSON.stringify(String(type).slice(0, 20))}, not vector or scalar`);
  if (!Array.isArray(result)) return fail('malformed vector');
  if (result.length !== 1) return fail(`${result.length} series, need exactly one`);
  return sampleValue((result[0] as { value?: unknown } | null)?.value);
}

/** Evaluates one instant query; never throws (unreachable, timeout, HTTP error, oversize: no value). */
export async function queryPrometheus(p: PrometheusOptions, query: string): Promise<QueryResult> {
  const url = `${p.url}/api/v1/query?query=${encodeURIComponent(query)}`;
  const signal = AbortSignal.timeout(p.timeoutMs);
  try {
    const res = await fetch(url, {
      headers: { accept: 'application/json', ...p.headers },
      signal,
      redirect: 'error',
    });
    const body = res.body;
    if (!body) return fail(`HTTP ${res.status} without a body`);
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of body as AsyncIterable<Uint8Array>) {
      size += chunk.byteLength;
      if (size > ANSWER_MAX_BYTES) return fail(`answer larger than ${ANSWER_MAX_BYTES} bytes`);
      chunks.push(chunk);
    }
    const text = Buffer.concat(chunks).toString('utf8');
    const parsed = parseQueryAnswer(text);
    // Prometheus answers a bad query with 400 and status error: the parsed reason says more than the code.
    if (!res.ok && parsed.value !== null) return fail(`HTTP ${res.status}`);
    return parsed;
  } catch (e) {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    if (err.name === 'TimeoutError' || err.name === 'AbortError')
      return fail(`no answer within ${p.timeoutMs} ms`);
    // Only a code or the error's name: a message may quote the URL or a header, and the reason is shown to every
    // reader of the rollout, kept in the audit log and sent to webhook receivers.
    return fail(`unreachable: ${err.cause?.code ?? err.name}`.slice(0, 200));
  }
}

/** Why a plan with metric gates cannot be applied here (no Prometheus configured), or null. */
export function metricGatesRefusal(plan: Plan, prometheus: PrometheusOptions | null): string | null {
  if (prometheus) return null;
  const wave = plan.waves.find((w) => (w.metrics?.length ?? 0) > 0);
  if (!wave) return null;
  return `plan ${plan.name}: wave ${wave.name} has metric gates, but server.yaml has no prometheus: url configured`;
}

const GATED: ReadonlySet<RolloutStatus> = new Set(['running', 'baking']);

/** Evaluates every running or baking rollout's current metric gates at their intervals (see the top). */
export class MetricGateEvaluator {
  private readonly periodic: PeriodicPass;
  /** When each gate (rollout/wave/name) was last queried; entries of other waves are dropped as they pass. */
  private readonly lastQueried = new Map<string, number>();

  constructor(
    private readonly store: Store,
    private readonly driver: RolloutDriver,
    private readonly log: Logger,
    private readonly clock: () => number,
    private readonly prometheus: PrometheusOptions | null,
  ) {
    this.periodic = new PeriodicPass(() => this.pass(), log, 'metric gate');
  }

  private get stopped(): boolean {
    return this.periodic.stopped;
  }

  /** Looks for due gates every `everyMs` (intervals are at least 5 s, so a second is precise enough). */
  start(everyMs = 1000): void {
    this.periodic.start(everyMs);
  }

  /** Stops the timer and waits for the pass in progress. */
  stop(): Promise<void> {
    return this.periodic.stop();
  }

  /** One pass: query the due gates of each gated rollout and step it with their results. */
  async pass(): Promise<void> {
    const live = new Set<string>();
    for (const id of await rolloutIdsIn(this.store.db, GATED)) {
      if (this.stopped) return;
      const ro = await findRollout(this.store.db, id);
      if (!ro || !GATED.has(ro.state.status)) continue;
      const w = ro.state.wave;
      const wave = ro.plan.waves[w];
      if (!wave?.metrics?.length) continue;
      const due = wave.metrics.filter((g) => {
        const key = `${id}/${w}/${g.name}`;
        live.add(key);
        const last = this.lastQueried.get(key);
        return last === undefined || this.clock() - last >= g.intervalMs;
      });
      if (due.length === 0) continue;
      const events = await Promise.all(
        due.map(async (g): Promise<MetricEvent> => {
          this.lastQueried.set(`${id}/${w}/${g.name}`, this.clock());
          const r = this.prometheus
            ? await queryPrometheus(this.prometheus, g.query)
            : fail('no prometheus configured in server.yaml');
          if (r.value === null)
            this.log.warn({ rollout: id, gate: g.name, error: r.error }, 'metric gate: no value');
          return { kind: 'metric', wave: w, name: g.name, value: r.value, error: r.error, at: this.clock() };
        }),
      );
      if (this.stopped) return;
      const after = await this.driver.stepRollout(id, events, 'engine');
      // The halt's transition is audited with its reason; this entry adds the gate's numbers as fields.
      if (after.status !== ro.state.status && after.reason?.includes('metric gate')) {
        const fired = events.find((e) => after.reason?.includes(`metric gate ${e.name} `));
        const g = wave.metrics.find((m) => m.name === fired?.name);
        if (fired && g)
          await inTransaction(this.store, (tx) =>
            appendAudit(tx, {
              at: this.clock(),
              actor: 'engine',
              action: 'rollout.metric-gate',
              subject: `rollout/${id}`,
              detail: {
                wave: wave.name,
                gate: g.name,
                query: g.query,
                comparison: g.comparison,
                threshold: g.threshold,
                value: fired.value,
                error: fired.error ?? null,
                status: after.status,
                why: after.reason,
              },
            }),
          );
      }
    }
    for (const key of this.lastQueried.keys()) if (!live.has(key)) this.lastQueried.delete(key);
  }
}
