// Plan analysis: before anything runs, what each wave will take and the worst case a plan can expose.
import { type Plan, resolveAmount } from './plan.ts';
import { type Labels, matches, parseSelector } from './selector.ts';

export interface WaveExposure {
  wave: string;
  devices: number;
  cumulative: number; // devices exposed once this wave has run
  cumulativePercent: number;
  failureBudget: number; // failures the wave tolerates before halting
  worstCaseFailed: number; // bad devices possible by the end of this wave if every budget is used
  bakeMs: number;
  approval: boolean;
}

export interface PlanExposure {
  fleet: number;
  waves: WaveExposure[];
  firstWavePercent: number;
  worstCaseExposure: number; // devices a bad release can reach before the engine must halt
  worstCasePercent: number;
  minDurationMs: number;
  unreached: number; // devices no wave selects
  problems: string[]; // reasons to refuse the plan
  warnings: string[];
}

/** Computes the exposure of a plan over a fleet, with the engine's own selection rules. */
export function analysePlan(
  plan: Plan,
  fleet: readonly Labels[],
  opts: { allowWide?: boolean } = {},
): PlanExposure {
  const taken = new Array<boolean>(fleet.length).fill(false);
  let cumulative = 0;
  let worstFailed = 0;
  let worstCaseExposure = 0;
  let halted = false;
  let minDurationMs = 0;
  const waves: WaveExposure[] = [];
  for (const w of plan.waves) {
    const sel = parseSelector(w.select);
    const idx: number[] = [];
    fleet.forEach((l, i) => {
      if (!taken[i] && matches(sel, l)) idx.push(i);
    });
    const n = Math.min(idx.length, resolveAmount(w.size, idx.length));
    for (let i = 0; i < n; i++) taken[idx[i]] = true;
    cumulative += n;
    const budget =
      'count' in w.maxFailures ? w.maxFailures.count : Math.floor((w.maxFailures.percent * n) / 100);
    worstFailed += Math.min(n, budget);
    // A release that fails everywhere is stopped in the first wave whose budget it exceeds.
    if (!halted) {
      worstCaseExposure = cumulative;
      if (n > budget) halted = true;
    }
    minDurationMs += w.bakeMs;
    waves.push({
      wave: w.name,
      devices: n,
      cumulative,
      cumulativePercent: fleet.length ? (cumulative * 100) / fleet.length : 0,
      failureBudget: budget,
      worstCaseFailed: worstFailed,
      bakeMs: w.bakeMs,
      approval: w.approval,
    });
  }
  const problems: string[] = [];
  const firstWavePercent = waves[0] && fleet.length ? (waves[0].devices * 100) / fleet.length : 0;
  // A first wave of one device is never too wide: on a small fleet that is what a canary is.
  if (!opts.allowWide && firstWavePercent > plan.firstWaveCapPercent && (waves[0]?.devices ?? 0) > 1) {
    problems.push(
      `first wave "${waves[0].wave}" exposes ${firstWavePercent.toFixed(1)}% of the fleet, over the ${plan.firstWaveCapPercent}% cap (use --allow-wide to accept)`,
    );
  }
  const warnings = waves.filter((w) => w.devices === 0).map((w) => `wave "${w.wave}" selects no device`);
  return {
    fleet: fleet.length,
    waves,
    firstWavePercent,
    worstCaseExposure,
    worstCasePercent: fleet.length ? (worstCaseExposure * 100) / fleet.length : 0,
    minDurationMs,
    unreached: taken.filter((t) => !t).length,
    problems,
    warnings,
  };
}
