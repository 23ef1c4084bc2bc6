// Simulated device signals for evidence gates: each device reports, at its check-ins, a count of events in the
// window since the last one (restarts, crashes, errors), drawn from a Poisson distribution around the signal's
// baseline mean (`--signal NAME=MEAN`, default 1); a shift fault (faults.ts) scales the mean on devices of its
// selector that run the new release. Like the server, the control plane keeps only each device's latest sample
// and when it arrived. Draws come from their own seeded stream, so adding signals changes nothing else.
import type { Plan } from '../engine/plan.ts';
import type { Labels } from '../engine/selector.ts';
import { matches, type Selector } from '../engine/selector.ts';
import type { Fault } from './faults.ts';
import type { Rng } from './prng.ts';

/** The baseline mean of a signal no `--signal` names. */
export const DEFAULT_SIGNAL_MEAN = 1;

/** Parses one `--signal NAME=MEAN`; throws a one-line error naming it. */
export function parseSignalMean(spec: string): { name: string; mean: number } {
  const m = /^([a-z_][a-z0-9_]{0,63})=(.*)$/.exec(spec.trim());
  if (!m) throw new Error(`--signal "${spec}": expected NAME=MEAN, e.g. restarts=0.5`);
  const mean = Number(m[2].trim());
  if (m[2].trim() === '' || !Number.isFinite(mean) || mean <= 0 || mean > 1e6)
    throw new Error(`--signal "${spec}": the mean must be a number above 0 (events per check-in)`);
  return { name: m[1], mean };
}

/** Every signal the plan's evidence gates compare, in the order they first appear. */
export function comparedSignals(plan: Plan): string[] {
  const names = new Set<string>();
  for (const w of plan.waves) for (const g of w.compare?.signals ?? []) names.add(g.name);
  return [...names];
}

/** ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: about 15 digits), for the Poisson rejection sampler. */
function logGamma(x: number): number {
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  const z = x - 1;
  let a = c[0];
  const t = z + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (z + i);
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(a);
}

/**
 * A Poisson draw: Knuth's product of uniforms for small means, Hörmann's transformed rejection (PTRS, 1993)
 * above, where the product method would need about `mean` uniforms per draw.
 */
export function poisson(rng: Rng, mean: number): number {
  if (!(mean > 0)) return 0;
  if (mean < 10) {
    const limit = Math.exp(-mean);
    let k = 0;
    let p = rng.next();
    while (p > limit) {
      k++;
      p *= rng.next();
    }
    return k;
  }
  const slam = Math.sqrt(mean);
  const loglam = Math.log(mean);
  const b = 0.931 + 2.53 * slam;
  const a = -0.059 + 0.02483 * b;
  const invAlpha = 1.1239 + 1.1328 / (b - 3.4);
  const vr = 0.9277 - 3.6224 / (b - 2);
  for (;;) {
    const u = rng.next() - 0.5;
    const v = rng.next();
    const us = 0.5 - Math.abs(u);
    const k = Math.floor(((2 * a) / us + b) * u + mean + 0.43);
    if (us >= 0.07 && v <= vr) return k;
    if (k < 0 || (us < 0.013 && v > us)) continue;
    if (
      Math.log(v) + Math.log(invAlpha) - Math.log(a / (us * us) + b) <=
      -mean + k * loglam - logGamma(k + 1)
    )
      return k;
  }
}

/** A sample as the server keeps it: the values of the latest check-in and when it arrived. */
export interface SignalSample {
  values: Record<string, number>;
  receivedAt: number;
}

/** The signals of a simulated fleet: baseline means, shifts, and each device's latest sample. */
export class SimSignals {
  private readonly means: number[];
  /** Per signal: the shifts that apply to it, as (selector, factor). */
  private readonly shifts: Array<Array<{ selector: Selector; factor: number }>>;
  private readonly values: Float64Array;
  private readonly receivedAt: Float64Array;

  constructor(
    readonly names: readonly string[],
    means: Readonly<Record<string, number>>,
    faults: readonly Fault[],
    private readonly labels: readonly Labels[],
    private readonly rng: Rng,
  ) {
    this.means = names.map((n) => means[n] ?? DEFAULT_SIGNAL_MEAN);
    this.shifts = names.map((n) =>
      faults.flatMap((f) =>
        f.shift && f.shift.name === n ? [{ selector: f.selector, factor: 1 + f.shift.shift }] : [],
      ),
    );
    this.values = new Float64Array(labels.length * names.length);
    this.receivedAt = new Float64Array(labels.length).fill(Number.NaN);
  }

  /** The baseline mean of each signal. */
  baseline(): Array<{ name: string; mean: number }> {
    return this.names.map((name, j) => ({ name, mean: this.means[j] }));
  }

  /**
   * Device i checked in at `at`, having run the new release (`onRelease`) through the window before: a new
   * sample, unless the one kept is as recent (a check-in is sampled once).
   */
  checkedIn(i: number, at: number, onRelease: boolean): void {
    const last = this.receivedAt[i];
    if (!Number.isNaN(last) && last >= at) return;
    this.receivedAt[i] = at;
    const k = this.names.length;
    for (let j = 0; j < k; j++) {
      let mean = this.means[j];
      if (onRelease)
        for (const s of this.shifts[j]) if (matches(s.selector, this.labels[i])) mean *= s.factor;
      this.values[i * k + j] = poisson(this.rng, mean);
    }
  }

  /** Device i's latest sample, or null before its first. */
  latest(i: number): SignalSample | null {
    const at = this.receivedAt[i];
    if (Number.isNaN(at)) return null;
    const k = this.names.length;
    const values: Record<string, number> = {};
    for (let j = 0; j < k; j++) values[this.names[j]] = this.values[i * k + j];
    return { values, receivedAt: at };
  }
}
