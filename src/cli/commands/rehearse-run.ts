// What `ringfence rehearse` does once its flags are parsed; loaded only when it runs, so `--help` stays light.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseDuration } from '../../engine/duration.ts';
import { type Plan, PlanError, parsePlan } from '../../engine/plan.ts';
import type { Labels } from '../../engine/selector.ts';
import type { DeviceSummary } from '../../server/routes/admin-fleet.ts';
import { type Fault, parseFault } from '../../sim/faults.ts';
import { fleetFromLabels, generateFleet, type SimFleet } from '../../sim/fleet.ts';
import { createRng } from '../../sim/prng.ts';
import { type RehearsalResult, rehearse } from '../../sim/rehearsal.ts';
import { budgetSentence, comparisonSentence } from '../../sim/report-evidence.ts';
import { formatSpan, renderReport } from '../../sim/report-html.ts';
import { comparedSignals, parseSignalMean } from '../../sim/signals.ts';
import { describeTiming, resolveTiming, type TimingModel } from '../../sim/timing.ts';
import { api, CliError, type Conn, usageError } from '../client.ts';
import { printErrorLine, printLine, printTable } from '../output.ts';
import { readFleet } from './rollout.ts';

export interface RehearseOpts {
  fleet?: string;
  fromServer?: boolean;
  fault: string[];
  signal: string[];
  seed: string;
  report?: string;
  json?: boolean;
  checkinEvery?: string;
  poll?: string;
  applyTime?: string;
  healthTime?: string;
  probation?: string;
  agentConfig?: string;
  tick?: string;
  approveAfter: string;
  horizon: string;
  emergency?: boolean;
  start?: string;
  quiet?: boolean;
}

function inventory(file: string): SimFleet {
  if (!existsSync(file)) throw usageError(`${file}: no such file (give a device count or an inventory)`);
  if (file.endsWith('.json')) {
    // Keep device ids when the inventory has them: [{id, labels}] or [{...labels}].
    const data = JSON.parse(readFileSync(file, 'utf8')) as Array<Record<string, unknown>>;
    if (!Array.isArray(data)) throw new CliError(`${file}: expected a JSON array of devices`);
    const fleet = fleetFromLabels(data.map((d) => (d.labels ?? d) as Labels));
    data.forEach((d, i) => {
      if (typeof d.id === 'string') fleet.ids[i] = d.id;
    });
    return fleet;
  }
  return fleetFromLabels(readFleet(file));
}

function duration(v: string, what: string): number {
  try {
    return parseDuration(v);
  } catch (e) {
    throw usageError(`${what}: ${(e as Error).message}`);
  }
}

/** `--apply-time 30s` or a range `10s..2m`. */
function durationRange(v: string, what: string): [number, number] {
  const [a, b = a] = v.split('..');
  const lo = duration(a, what);
  const hi = duration(b, what);
  if (hi < lo) throw usageError(`${what}: ${v}: the range ends before it starts`);
  return [lo, hi];
}

/** Device timings a device's own agent configuration defines: its check-in interval and its probation. */
async function agentTimings(file: string): Promise<{ pollMs?: number; healthMs?: number }> {
  const { loadAgentConfig } = await import('../../agent/config.ts');
  let cfg: ReturnType<typeof loadAgentConfig>;
  try {
    cfg = loadAgentConfig(file);
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  // Health time: the longest probation window of the components (checks that pass return quickly).
  const healthMs = Math.max(...cfg.components.map((c) => c.probation.window));
  return { pollMs: cfg.poll_interval, healthMs: Math.max(healthMs, 1000) };
}

function printHuman(r: RehearsalResult, timing: TimingModel): void {
  printLine(`rehearsal of plan ${r.plan} over ${r.fleet} simulated devices (seed ${r.seed})`);
  printLine(describeTiming(timing));
  for (const w of r.warnings) printLine(`warning: ${w.message}`);
  for (const f of r.faults) printLine(`fault ${f.spec}: ${f.devices} devices`);
  printTable(
    r.waves.map((w) => ({
      wave: w.name,
      selected: w.selected,
      exposed: w.exposed,
      succeeded: w.succeeded,
      failed: w.failed,
      rolled_back: w.rolled_back,
      reached: w.reached_at_ms === null ? 'not reached' : `+${formatSpan(w.reached_at_ms)}`,
    })),
    ['wave', 'selected', 'exposed', 'succeeded', 'failed', 'rolled_back', 'reached'],
  );
  printLine(`end state: ${r.end_state}${r.reason ? ` (${r.reason})` : ''}`);
  if (r.unfinished) printLine(`unfinished: ${r.unfinished}`);
  if (r.warnings.length && r.end_state !== 'completed')
    printLine(
      'note: the plan gives devices less time to report than the model needs; fix report_deadline, or give the real figures (--checkin-every, --apply-time, --health-time, --agent-config)',
    );
  printLine(
    `exposure: ${r.exposed} devices (${r.exposed_percent}%); peak running at once: ${r.peak_running} (${r.peak_running_percent}%)`,
  );
  printLine(
    `time to halt: ${formatSpan(r.time_to_halt_ms)}; time to complete: ${formatSpan(r.time_to_complete_ms)}; ` +
      `${r.steps} engine steps, ${r.device_events} device events`,
  );
  if (r.evidence_gates) {
    printLine(comparisonSentence(r.evidence_gates));
    printLine(budgetSentence(r.evidence_gates));
  }
}

/** The plan file, parsed; a bad one is a one-line CLI error. */
function loadPlan(file: string): Plan {
  try {
    return parsePlan(readFileSync(file, 'utf8'), file);
  } catch (e) {
    if (e instanceof PlanError) throw new CliError(e.message);
    throw new CliError(`${file}: ${(e as Error).message}`);
  }
}

/** The --fault specs, parsed; a bad one is a usage error. */
function loadFaults(specs: string[]): Fault[] {
  try {
    return specs.map(parseFault);
  } catch (e) {
    throw usageError((e as Error).message);
  }
}

/**
 * The --signal baseline means, parsed; a bad one, or one (or a shift fault) naming a signal no evidence gate of
 * the plan compares, is a usage error.
 */
function loadSignals(specs: string[], plan: Plan, faults: readonly Fault[]): Record<string, number> {
  const known = new Set(comparedSignals(plan));
  const means: Record<string, number> = {};
  for (const spec of specs) {
    let parsed: { name: string; mean: number };
    try {
      parsed = parseSignalMean(spec);
    } catch (e) {
      throw usageError((e as Error).message);
    }
    if (!known.has(parsed.name))
      throw usageError(`--signal ${spec}: the plan's evidence gates compare no signal named ${parsed.name}`);
    means[parsed.name] = parsed.mean;
  }
  for (const f of faults)
    if (f.shift && !known.has(f.shift.name))
      throw usageError(
        `fault "${f.spec}": the plan's evidence gates compare no signal named ${f.shift.name}`,
      );
  return means;
}

/** The simulated fleet: the server's live fleet, a generated one of --fleet N devices, or an inventory. */
async function loadFleet(o: RehearseOpts, conn: () => Conn): Promise<SimFleet> {
  if (o.fromServer) {
    const devs = await api<DeviceSummary[]>(conn(), 'GET', '/v1/admin/devices');
    return { ids: devs.map((d) => d.id), labels: devs.map((d) => d.labels) };
  }
  if (o.fleet && /^\d+$/.test(o.fleet)) {
    const n = Number(o.fleet);
    if (n < 1 || n > 5_000_000) throw usageError('--fleet: between 1 and 5000000 devices');
    return generateFleet(n, createRng(`fleet:${o.seed}`));
  }
  if (o.fleet) return inventory(o.fleet);
  throw usageError('give --fleet N, --fleet FILE or --from-server');
}

/** The device timings from the flags and the agent configuration (timing.ts fills in the rest). */
async function loadTiming(plan: Plan, o: RehearseOpts): Promise<TimingModel> {
  if (o.checkinEvery && o.poll) throw usageError('give --checkin-every or --poll, not both');
  if (o.healthTime && o.probation) throw usageError('give --health-time or --probation, not both');
  const poll = o.checkinEvery ?? o.poll;
  const health = o.healthTime ?? o.probation;
  const timing = resolveTiming(plan, {
    pollMs: poll === undefined ? undefined : duration(poll, '--checkin-every'),
    applyMs: o.applyTime === undefined ? undefined : durationRange(o.applyTime, '--apply-time'),
    healthMs: health === undefined ? undefined : duration(health, '--health-time'),
    tickMs: o.tick === undefined ? undefined : duration(o.tick, '--tick'),
    agent: o.agentConfig ? await agentTimings(o.agentConfig) : undefined,
  });
  if (timing.pollMs < 1000) throw usageError('--checkin-every: at least 1s');
  return timing;
}

/** Writes report.json and the self-contained index.html into `dir`. */
function writeReport(r: RehearsalResult, dir: string, say: boolean): void {
  const out = resolve(dir);
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'report.json'), `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(join(out, 'index.html'), renderReport(r));
  if (say) printLine(`report: ${join(out, 'index.html')}`);
}

/** Runs a rehearsal of the plan in `file` with the command's flags and prints or writes the result. */
export async function runRehearsal(file: string, o: RehearseOpts, conn: () => Conn): Promise<void> {
  const plan = loadPlan(file);
  const faults = loadFaults(o.fault);
  const signals = loadSignals(o.signal ?? [], plan, faults);
  const fleet = await loadFleet(o, conn);
  const timing = await loadTiming(plan, o);
  const start = o.start ? Date.parse(o.start) : undefined;
  if (start !== undefined && Number.isNaN(start)) throw usageError(`--start: not a date: ${o.start}`);
  const wall = Date.now();
  const progress = !o.quiet;
  if (progress && fleet.ids.length >= 20_000)
    process.stderr.write(`rehearse: ${fleet.ids.length} devices, plan ${plan.name}…\n`);
  const r = rehearse({
    plan,
    fleet,
    faults,
    signals,
    seed: o.seed,
    start,
    timing,
    approveAfterMs: o.approveAfter === 'never' ? null : duration(o.approveAfter, '--approve-after'),
    horizonMs: duration(o.horizon, '--horizon'),
    emergency: o.emergency,
    progress: progress
      ? (p) =>
          process.stderr.write(
            `rehearse: +${formatSpan(p.virtualMs)} ${p.wave ?? '-'} ${p.status}, exposed ${p.installed}, ${p.events} events\n`,
          )
      : undefined,
  });
  if (progress && Date.now() - wall > 1000)
    process.stderr.write(`rehearse: done in ${((Date.now() - wall) / 1000).toFixed(1)}s wall time\n`);
  if (o.report) writeReport(r, o.report, !o.json);
  if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  else printHuman(r, timing);
  // Also on stderr with --json, so a script that only keeps the JSON still shows it to a person.
  if (o.json && !o.quiet) for (const w of r.warnings) printErrorLine(`rehearse: warning: ${w.message}`);
}
