// Summaries the benchmarks share: a sample's median, quartiles and range, and rounding for printing.

/** Rounds to `digits` decimals (for printing and JSON results). */
export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Median, quartiles (linear interpolation) and range of a sample, rounded to `digits` decimals. */
export function spread(xs: readonly number[], digits = 2) {
  const v = [...xs].sort((a, b) => a - b);
  const q = (p: number) => {
    const i = (v.length - 1) * p;
    const lo = Math.floor(i);
    return v[lo] + (v[Math.min(lo + 1, v.length - 1)] - v[lo]) * (i - lo);
  };
  const r = (x: number) => round(x, digits);
  return { median: r(q(0.5)), q1: r(q(0.25)), q3: r(q(0.75)), min: r(v[0]), max: r(v[v.length - 1]) };
}
