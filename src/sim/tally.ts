// The rehearsal's counts: per wave and fleet-wide, how many devices installed, run, failed and rolled back the
// release, and the series the report charts. Devices and the control plane tell it what happened; it never
// decides anything.
import type { Plan } from '../engine/plan.ts';
import type { Assignment } from '../engine/rollout.ts';
import type { SeriesPoint, WaveOutcome } from './rehearsal-result.ts';

// Device events are sampled into 15 s buckets: the chart sees check-ins between engine steps.
const BUCKET_MS = 15_000;

/** The counts of one rehearsal, updated as devices and the engine act. */
export class Tally {
  readonly waves: WaveOutcome[];
  /** Devices running the release now. */
  running = 0;
  /** Devices that have installed the release (each once). */
  installed = 0;
  /** Devices that failed: reported a failure, or missed their report deadline (each once). */
  failed = 0;
  /** The most devices running the release at the same instant. */
  peak = 0;
  private readonly waveOf: Int16Array;
  private readonly failedFlag: Uint8Array;
  private readonly series: SeriesPoint[] = [];

  constructor(
    plan: Plan,
    devices: number,
    private readonly start: number,
  ) {
    this.waves = plan.waves.map((w) => ({
      name: w.name,
      selected: 0,
      offered: 0,
      exposed: 0,
      succeeded: 0,
      failed: 0,
      rolled_back: 0,
      skipped: 0,
      reached_at_ms: null,
    }));
    this.waveOf = new Int16Array(devices).fill(-1);
    this.failedFlag = new Uint8Array(devices);
  }

  /** Device i switched to the release: it runs it, and has installed it. */
  installedOn(i: number): void {
    this.running++;
    this.installed++;
    if (this.running > this.peak) this.peak = this.running;
    const w = this.waveOf[i];
    if (w >= 0) this.waves[w].exposed++;
  }

  /** Device i is back on its previous release (on its own, or told to revert). */
  rolledBackOn(i: number): void {
    this.running--;
    const w = this.waveOf[i];
    if (w >= 0) this.waves[w].rolled_back++;
  }

  /** Device i failed; it counts once, whether the engine saw it fail or its report came after the halt. */
  failedOn(i: number): void {
    if (this.failedFlag[i]) return;
    this.failedFlag[i] = 1;
    this.failed++;
    if (this.waveOf[i] >= 0) this.waves[this.waveOf[i]].failed++;
  }

  /** Device i's assignment changed from `prev` (none: the engine just selected it) to `a`. */
  assignmentChanged(i: number, a: Assignment, prev: Assignment | undefined): void {
    const w = this.waves[a.wave];
    if (!prev) {
      w.selected++;
      this.waveOf[i] = a.wave;
    }
    if (a.state === prev?.state) return;
    if (a.state === 'offered') w.offered++;
    if (a.state === 'succeeded' && prev?.state !== 'succeeded') w.succeeded++;
    if (a.state === 'failed') {
      this.failedOn(i);
      if (prev?.state === 'succeeded') w.succeeded--;
    }
    if (a.state === 'skipped') {
      w.skipped++;
      w.selected--;
    }
  }

  /** The wave started at `atMs` since the start (its first start counts). */
  waveReached(wave: number, atMs: number): void {
    const w = this.waves[wave];
    if (w && w.reached_at_ms === null) w.reached_at_ms = atMs;
  }

  /** Records the counts at virtual time t in the series, when they changed. */
  sample(t: number): void {
    const last = this.series[this.series.length - 1];
    if (
      last &&
      last.running === this.running &&
      last.exposed === this.installed &&
      last.failed === this.failed
    )
      return;
    const bucket = Math.floor((t - this.start) / BUCKET_MS) * BUCKET_MS;
    const p = { t: bucket, running: this.running, exposed: this.installed, failed: this.failed };
    if (last && last.t === bucket) this.series[this.series.length - 1] = p;
    else this.series.push(p);
  }

  /** The series, at most `max` points (see downsample). */
  seriesPoints(max: number): SeriesPoint[] {
    return downsample(this.series, max);
  }
}

/** a as a percentage of n, two decimals. */
export function pct(a: number, n: number): number {
  return n === 0 ? 0 : Math.round((a * 10000) / n) / 100;
}

/** Keeps at most max points, always the first, the last and each bucket's peak of running devices. */
function downsample(points: SeriesPoint[], max: number): SeriesPoint[] {
  if (points.length <= max) return points;
  const out: SeriesPoint[] = [points[0]];
  const bucket = (points.length - 2) / (max - 2);
  for (let b = 0; b < max - 2; b++) {
    let best = points[1 + Math.floor(b * bucket)];
    const end = Math.min(points.length - 1, 1 + Math.floor((b + 1) * bucket));
    for (let k = 1 + Math.floor(b * bucket); k < end; k++)
      if (points[k].running > best.running) best = points[k];
    out.push(best);
  }
  out.push(points[points.length - 1]);
  return out;
}
