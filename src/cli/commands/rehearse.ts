// `ringfence rehearse`: run a plan against a simulated fleet in virtual time, with faults, before touching a machine.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { parseDuration } from '../../engine/duration.ts';
import { PlanError, parsePlan } from '../../engine/plan.ts';
import type { Labels } from '../../engine/selector.ts';
import type { DeviceSummary } from '../../server/routes/admin-fleet.ts';
import { FAULT_HELP, type Fault, parseFault } from '../../sim/faults.ts';
import { fleetFromLabels, generateFleet, type SimFleet } from '../../sim/fleet.ts';
import { createRng } from '../../sim/prng.ts';
import { type RehearsalResult, rehearse } from '../../sim/rehearsal.ts';
import { formatSpan, renderReport } from '../../sim/report-html.ts';
import { api, CliError, type Conn } from '../client.ts';
import { printLine, printTable } from '../output.ts';
import { readFleet } from './rollout.ts';

interface RehearseOpts {
  fleet?: string;
  fromServer?: boolean;
  fault: string[];
  seed: string;
  report?: string;
  json?: boolean;
  poll: string;
  probation: string;
  tick: string;
  approveAfter: string;
  horizon: string;
  emergency?: boolean;
  start?: string;
  quiet?: boolean;
}

function inventory(file: string): SimFleet {
  if (!existsSync(file)) throw new CliError(`${file}: no such file (give a device count or an inventory)`);
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
    throw new CliError(`${what}: ${(e as Error).message}`);
  }
}

function printHuman(r: RehearsalResult): void {
  printLine(`rehearsal of plan ${r.plan} over ${r.fleet} simulated devices (seed ${r.seed})`);
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
  printLine(
    `exposure: ${r.exposed} devices (${r.exposed_percent}%); peak running at once: ${r.peak_running} (${r.peak_running_percent}%)`,
  );
  printLine(
    `time to halt: ${formatSpan(r.time_to_halt_ms)}; time to complete: ${formatSpan(r.time_to_complete_ms)}; ` +
      `${r.steps} engine steps, ${r.device_events} device events`,
  );
}

export function rehearseCommand(program: Command, conn: () => Conn): void {
  program
    .command('rehearse')
    .description('rehearse a plan against a simulated fleet in virtual time, with injected faults')
    .argument('<plan>', 'plan YAML')
    .option('--fleet <n|file>', 'generated fleet size, or an inventory (JSON or CSV of labels)')
    .option('--from-server', 'rehearse over the live fleet of the server (labels only)')
    .option(
      '--fault <spec>',
      `inject a fault (repeatable):\n${FAULT_HELP}`,
      (v: string, acc: string[]) => [...acc, v],
      [],
    )
    .option('--seed <s>', 'seed: the same seed gives the same rehearsal', '1')
    .option('--report <dir>', 'write index.html (self-contained, charts) and report.json here')
    .option('--json', 'print the result as one JSON object')
    .option('--poll <duration>', 'device check-in interval', '1m')
    .option('--probation <duration>', 'health checks after a switch before commit', '5m')
    .option('--tick <duration>', 'how soon the control plane reacts to reports', '1m')
    .option('--approve-after <duration|never>', 'an operator approves gated waves after this', '0s')
    .option('--horizon <duration>', 'give up after this much virtual time', '60d')
    .option('--emergency', 'rehearse an emergency rollout (bake times shortened)')
    .option('--start <iso>', 'virtual start time (default 2026-01-05T08:00Z)')
    .option('--quiet', 'no progress on stderr')
    .action(async (file: string, o: RehearseOpts) => {
      let plan: ReturnType<typeof parsePlan>;
      try {
        plan = parsePlan(readFileSync(file, 'utf8'), file);
      } catch (e) {
        if (e instanceof PlanError) throw new CliError(e.message);
        throw new CliError(`${file}: ${(e as Error).message}`);
      }
      let faults: Fault[];
      try {
        faults = o.fault.map(parseFault);
      } catch (e) {
        throw new CliError((e as Error).message);
      }
      let fleet: SimFleet;
      if (o.fromServer) {
        const devs = await api<DeviceSummary[]>(conn(), 'GET', '/v1/admin/devices');
        fleet = { ids: devs.map((d) => d.id), labels: devs.map((d) => d.labels) };
      } else if (o.fleet && /^\d+$/.test(o.fleet)) {
        const n = Number(o.fleet);
        if (n < 1 || n > 5_000_000) throw new CliError('--fleet: between 1 and 5000000 devices');
        fleet = generateFleet(n, createRng(`fleet:${o.seed}`));
      } else if (o.fleet) fleet = inventory(o.fleet);
      else throw new CliError('give --fleet N, --fleet FILE or --from-server');
      const start = o.start ? Date.parse(o.start) : undefined;
      if (start !== undefined && Number.isNaN(start)) throw new CliError(`--start: not a date: ${o.start}`);
      const wall = Date.now();
      const progress = !o.quiet;
      if (progress && fleet.ids.length >= 20_000)
        process.stderr.write(`rehearse: ${fleet.ids.length} devices, plan ${plan.name}…\n`);
      const r = rehearse({
        plan,
        fleet,
        faults,
        seed: o.seed,
        start,
        pollMs: duration(o.poll, '--poll'),
        probationMs: duration(o.probation, '--probation'),
        tickMs: Math.max(1, duration(o.tick, '--tick')),
        approveAfterMs: o.approveAfter === 'never' ? null : duration(o.approveAfter, '--approve-after'),
        horizonMs: duration(o.horizon, '--horizon'),
        emergency: o.emergency,
        progress: progress
          ? (p) =>
              process.stderr.write(
                `rehearse: +${formatSpan(p.virtualMs)} ${p.wave ?? '-'} ${p.status}, exposed ${p.exposed}, ${p.events} events\n`,
              )
          : undefined,
      });
      if (progress && Date.now() - wall > 1000)
        process.stderr.write(`rehearse: done in ${((Date.now() - wall) / 1000).toFixed(1)}s wall time\n`);
      if (o.report) {
        const dir = resolve(o.report);
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, 'report.json'), `${JSON.stringify(r, null, 2)}\n`);
        writeFileSync(join(dir, 'index.html'), renderReport(r));
        if (!o.json) printLine(`report: ${join(dir, 'index.html')}`);
      }
      if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else printHuman(r);
    });
}
