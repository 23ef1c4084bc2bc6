// `ringfence plan …` and `ringfence rollout …`.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { formatDuration } from '../../engine/duration.ts';
import type { Plan } from '../../engine/plan.ts';
import type { Labels } from '../../engine/selector.ts';
import type { DeviceSummary } from '../../server/routes/admin-fleet.ts';
import type { DryRun } from '../../server/services/rollout-dry-run.ts';
import type { RolloutView, WaveCounts } from '../../server/services/rollout-view.ts';
import { withExamples } from '../../terminal/help.ts';
import { api, CliError, type Conn, usageError } from '../client.ts';
import { printJson, printLine, printTable } from '../output.ts';
import { type AwaitingApproval, awaitingLabel } from './release.ts';

/**
 * The audit log must say why for the risky switches (four eyes, issue 12): refused before any request, as a usage
 * error (exit code 2), when a switch is given without --reason. The server refuses it as well (400).
 */
function needReason(reason: string | undefined, switches: Array<[string, boolean | undefined]>): void {
  const used = switches.filter(([, on]) => on).map(([name]) => name);
  if (used.length && !reason?.trim())
    throw usageError(
      `${used.join(' and ')} ${used.length > 1 ? 'need' : 'needs'} --reason TEXT (kept in the audit log)`,
    );
}

/** Reads and validates a plan; the plan schema (zod, yaml) loads only here, so `--help` stays light. */
export async function readPlan(file: string): Promise<{ source: string; plan: Plan }> {
  const { PlanError, parsePlan } = await import('../../engine/plan.ts');
  let source: string;
  try {
    source = readFileSync(file, 'utf8');
  } catch (e) {
    throw new CliError(`${file}: ${(e as Error).message}`);
  }
  try {
    return { source, plan: parsePlan(source, file) };
  } catch (e) {
    if (e instanceof PlanError) throw new CliError(e.message);
    throw e;
  }
}

/** Reads a fleet inventory: JSON (array of label objects or of {labels}) or CSV with a header row. */
export function readFleet(file: string): Labels[] {
  const text = readFileSync(file, 'utf8');
  if (file.endsWith('.json')) {
    const data = JSON.parse(text) as Array<Record<string, unknown>>;
    return data.map((d) => (d.labels ?? d) as Labels);
  }
  const [head, ...lines] = text.split(/\r?\n/).filter((l) => l.trim());
  const cols = head.split(',').map((c) => c.trim());
  return lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i], v.trim()])));
}

/** `rollout start --dry-run`: per wave, who would be selected and who is left out, and why. */
function printDryRun(d: DryRun, json?: boolean): void {
  if (json) printJson(d);
  else {
    printLine(`dry run: ${d.component} via ${d.plan} over ${d.fleet} devices; nothing was started`);
    printTable(
      d.waves.map((w) => ({
        wave: w.wave,
        selected: w.selected,
        'left out': Object.entries(w.excluded)
          .filter(([, n]) => n > 0)
          .map(([why, n]) => `${n} ${why.replace('_', ' ')}`)
          .join(', '),
      })),
      ['wave', 'selected', 'left out'],
    );
  }
  if (d.problems.length) throw new CliError(d.problems.join('; '));
}

/** A rollout as `GET /v1/admin/rollouts/:id` answers it: with who started it and what waits for whose approval. */
type GovernedRollout = RolloutView & {
  started_by?: string | null;
  awaiting_approval?: AwaitingApproval | null;
};

function printRollout(r: GovernedRollout): void {
  printLine(
    `rollout ${r.id}: ${r.component}@${r.version} via ${r.plan} — ${r.status}${r.state.reason ? ` (${r.state.reason})` : ''}`,
  );
  printLine(
    `exposed: ${r.exposed} devices${r.wave ? `, current wave: ${r.wave}` : ''}${r.state.emergency ? ', EMERGENCY' : ''}`,
  );
  if (r.started_by) printLine(`started by: ${r.started_by}`);
  if (r.awaiting_approval)
    printLine(`waiting for: ${awaitingLabel(r.awaiting_approval)} (${r.awaiting_approval.what})`);
  printWaves(r.waves);
  if (r.metric_gates?.length) printMetricGates(r.metric_gates);
  if (r.evidence?.length) printEvidence(r.evidence);
}

/** Each wave's latest evidence-gate look, one row per signal (`rollout status`). */
function printEvidence(rows: RolloutView['evidence']): void {
  printLine('evidence gates:');
  const num = (v: number | null) => (v === null ? null : v.toPrecision(3));
  printTable(
    rows.map((e) => ({
      ...e,
      look: e.final ? `${e.look} (final)` : e.look,
      signal: e.critical ? `${e.signal} (critical)` : e.signal,
      'signal verdict': e.signal_verdict,
      p: num(e.p),
      effect: num(e.effect),
      treatment: e.n_treatment,
      control: e.n_control,
      'attributed to': e.attributed_to,
    })),
    [
      'wave',
      'look',
      'verdict',
      'signal',
      'signal verdict',
      'p',
      'effect',
      'treatment',
      'control',
      'attributed to',
    ],
  );
}

/** The metric gates with their last readings (`rollout status`); the condition is what must hold. */
function printMetricGates(gates: RolloutView['metric_gates']): void {
  printLine('metric gates:');
  printTable(
    gates.map((g) => ({
      ...g,
      condition: `${g.comparison} ${g.threshold}`,
      'last value': g.last_value ?? g.last_error,
      'last at': g.last_at === null ? null : new Date(g.last_at).toISOString(),
    })),
    ['wave', 'name', 'state', 'condition', 'last value', 'last at', 'query'],
  );
}

/** The per-wave counts as a table, one row a wave (`rollout status`, and `rollout watch` when it ends). */
export function printWaves(waves: WaveCounts[]): void {
  printTable(
    waves.map((w) => ({ ...w, 'rolled back': w.rolled_back })),
    [
      'name',
      'selected',
      'offered',
      'succeeded',
      'failed',
      'rolled back',
      'reverted',
      'unconfirmed',
      'skipped',
    ],
  );
}

export function planCommands(program: Command, conn: () => Conn): void {
  const plan = program.command('plan').description('rollout plans (policy as code)');
  withExamples(plan, [
    'plan check plans/standard.yaml --fleet fleet.json   # validate + exposure, before anything runs',
    'plan apply plans/standard.yaml',
    'plan list',
  ]);
  const apply = plan
    .command('apply')
    .description('validate a plan and store it on the server (a new version replaces one of the same name)')
    .argument('<file>', 'plan YAML')
    .option(
      '--allow-wide',
      'accept a first wave over the plan cap against the live fleet (audited; needs --reason)',
    )
    .option('--reason <text>', 'why (kept in the audit log; required with --allow-wide)')
    .option('--json', 'machine-readable output')
    .action(async (file: string, o: { json?: boolean; allowWide?: boolean; reason?: string }) => {
      needReason(o.reason, [['--allow-wide', o.allowWide]]);
      const { source } = await readPlan(file);
      const p = await api<Plan>(conn(), 'POST', '/v1/admin/plans', {
        source,
        file,
        ...(o.allowWide ? { allow_wide: true } : {}),
        ...(o.reason ? { reason: o.reason } : {}),
      });
      if (o.json) printJson(p);
      else
        printLine(
          `plan ${p.name} applied (${p.waves.length} waves: ${p.waves.map((w) => w.name).join(' → ')})`,
        );
    });
  withExamples(apply, [
    'plan apply plans/standard.yaml',
    "plan apply plans/hotfix.yaml --allow-wide --reason 'two-site fleet, first wave is one site'",
  ]);
  const list = plan
    .command('list')
    .description('the plans stored on the server, with their waves')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const rows = await api<Plan[]>(conn(), 'GET', '/v1/admin/plans');
      if (o.json) return printJson(rows);
      printTable(
        rows.map((p) => ({
          name: p.name,
          waves: p.waves.map((w) => w.name).join(' → '),
          on_failure: p.onFailure,
        })),
        ['name', 'waves', 'on_failure'],
      );
    });
  withExamples(list, ['plan list', 'plan list --json']);
  const check = plan
    .command('check')
    .description('validate a plan and print its worst-case exposure over a fleet')
    .argument('<file>', 'plan YAML')
    .option('--fleet <file>', 'inventory (JSON or CSV of labels)')
    .option('--from-server', 'use the live fleet of the server')
    .option('--allow-wide', 'accept a first wave above the plan cap')
    .option('--json', 'machine-readable output')
    .action(
      async (
        file: string,
        o: { fleet?: string; fromServer?: boolean; allowWide?: boolean; json?: boolean },
      ) => {
        const { plan: p } = await readPlan(file);
        let fleet: Labels[] = [];
        if (o.fleet) fleet = readFleet(o.fleet);
        else if (o.fromServer)
          fleet = (await api<DeviceSummary[]>(conn(), 'GET', '/v1/admin/devices')).map((d) => d.labels);
        const { analysePlan } = await import('../../engine/exposure.ts');
        const a = analysePlan(p, fleet, { allowWide: o.allowWide });
        if (o.json) printJson({ plan: p.name, valid: a.problems.length === 0, ...a });
        else {
          printLine(`plan ${p.name}: valid; fleet of ${a.fleet} devices`);
          printTable(
            a.waves.map((w) => ({
              wave: w.wave,
              devices: w.devices,
              cumulative: `${w.cumulative} (${w.cumulativePercent.toFixed(1)}%)`,
              budget: w.failureBudget,
              'worst failed': w.worstCaseFailed,
              bake: formatDuration(w.bakeMs),
              approval: w.approval ? 'yes' : 'no',
            })),
            ['wave', 'devices', 'cumulative', 'budget', 'worst failed', 'bake', 'approval'],
          );
          printLine(
            `worst-case exposure of a release that fails everywhere: ${a.worstCaseExposure} devices (${a.worstCasePercent.toFixed(1)}%)`,
          );
          printLine(
            `minimum duration: ${formatDuration(a.minDurationMs)}; devices no wave reaches: ${a.unreached}`,
          );
          for (const w of a.warnings) printLine(`warning: ${w}`);
        }
        if (a.problems.length) throw new CliError(a.problems.join('; '));
      },
    );
  withExamples(check, [
    'plan check plans/standard.yaml --fleet fleet.json',
    'plan check plans/standard.yaml --from-server --json',
  ]);
}

/** The rollout actions that take only an id, with their help line. */
const ACTIONS = {
  pause: 'pause a rollout: no new device is offered the release until it is resumed',
  resume: 'resume a paused rollout (or a halted one, to judge its gate again)',
  approve: 'approve the gate a rollout waits at (four eyes: not the operator who started it)',
  abort: 'stop a rollout for good: devices keep what they run (rollback returns them)',
  rollback: 'tell every exposed device to return to the release it had before',
  retry: 'offer the release again, in the current wave, to devices that failed on download or timeout',
} as const;

/** A plausible reason for each action, for the examples. */
const ACTION_REASONS: Record<keyof typeof ACTIONS, string> = {
  pause: 'wait for the vendor advisory',
  resume: 'vendor confirmed the fix',
  approve: 'canary metrics reviewed',
  abort: 'superseded by 2.1.1',
  rollback: 'crash reports from tier C',
  retry: 'network outage at site B is over',
};

export function rolloutCommands(program: Command, conn: () => Conn): void {
  const rollout = program.command('rollout').description('releases going through plans');
  withExamples(rollout, [
    'rollout start sensor-content@2.1.0 --plan standard',
    'rollout watch 7',
    "rollout stop-all --reason 'bad content seen on canaries'",
  ]);
  const start = rollout
    .command('start')
    .description('start a release through a plan, wave by wave (or --dry-run: who would get it)')
    .argument('<ref>', 'NAME@VERSION')
    .requiredOption('--plan <name>', 'plan name')
    .option('--emergency', 'same waves, bake times shortened by the plan factor (needs --reason)')
    .option(
      '--channel <channel>',
      'only devices of this channel: early or general (general needs early first)',
    )
    .option('--supersede', 'abort the active rollout of this component first (audited)')
    .option(
      '--force',
      'with --channel general: promote without a completed early rollout (audited; needs --reason)',
    )
    .option(
      '--reason <text>',
      'why (kept in the audit log; required with --emergency, --force and --allow-wide)',
    )
    .option(
      '--allow-wide',
      'accept a first wave over the plan cap against the live fleet (audited; needs --reason)',
    )
    .option(
      '--dry-run',
      'start nothing: show per wave how many devices would be selected and who is left out',
    )
    .option('--json', 'machine-readable output')
    .action(
      async (
        ref: string,
        o: {
          plan: string;
          emergency?: boolean;
          channel?: string;
          supersede?: boolean;
          force?: boolean;
          reason?: string;
          allowWide?: boolean;
          dryRun?: boolean;
          json?: boolean;
        },
      ) => {
        if (o.channel && o.channel !== 'early' && o.channel !== 'general') {
          throw usageError('--channel must be early or general');
        }
        // A dry run starts nothing, so it needs no reason.
        if (!o.dryRun)
          needReason(o.reason, [
            ['--emergency', o.emergency],
            ['--force', o.force],
            ['--allow-wide', o.allowWide],
          ]);
        const r = await api<RolloutView | DryRun>(conn(), 'POST', '/v1/admin/rollouts', {
          release: ref,
          plan: o.plan,
          emergency: !!o.emergency,
          ...(o.channel ? { channel: o.channel } : {}),
          ...(o.supersede ? { supersede: true } : {}),
          ...(o.force ? { force: true } : {}),
          ...(o.reason ? { reason: o.reason } : {}),
          ...(o.allowWide ? { allow_wide: true } : {}),
          ...(o.dryRun ? { dry_run: true } : {}),
        });
        if ('dry_run' in r) return printDryRun(r, o.json);
        if (o.json) printJson(r);
        else printLine(`rollout ${r.id} started: ${ref} via ${o.plan} (${r.status})`);
      },
    );
  withExamples(start, [
    'rollout start sensor-content@2.1.0 --plan standard',
    'rollout start sensor-content@2.1.0 --plan standard --dry-run   # starts nothing',
    "rollout start sensor-content@2.1.1 --plan standard --emergency --reason 'CVE-2026-1234'",
  ]);
  const listCmd = rollout
    .command('list')
    .description('every rollout: release, plan, status, current wave, devices exposed')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const rows = await api<RolloutView[]>(conn(), 'GET', '/v1/admin/rollouts');
      if (o.json) return printJson(rows);
      printTable(
        rows.map((r) => ({
          id: r.id,
          release: `${r.component}@${r.version}`,
          plan: r.plan,
          status: r.status,
          wave: r.wave,
          exposed: r.exposed,
        })),
        ['id', 'release', 'plan', 'status', 'wave', 'exposed'],
      );
    });
  withExamples(listCmd, ['rollout list', 'rollout list --json']);
  const status = rollout
    .command('status')
    .description('one rollout: status, exposure, who started it, what waits for approval, counts per wave')
    .argument('<id>', 'rollout id')
    .option('--json', 'machine-readable output')
    .action(async (id: string, o: { json?: boolean }) => {
      const r = await api<GovernedRollout>(conn(), 'GET', `/v1/admin/rollouts/${encodeURIComponent(id)}`);
      if (o.json) printJson(r);
      else printRollout(r);
    });
  withExamples(status, ['rollout status 7', 'rollout status 7 --json']);
  for (const action of Object.keys(ACTIONS) as Array<keyof typeof ACTIONS>) {
    const cmd = rollout
      .command(action)
      .description(ACTIONS[action])
      .argument('<id>', 'rollout id')
      .option('--reason <text>', 'why (kept in the audit log)')
      .option('--json', 'machine-readable output')
      .action(async (id: string, o: { reason?: string; json?: boolean }) => {
        const r = await api<RolloutView>(
          conn(),
          'POST',
          `/v1/admin/rollouts/${encodeURIComponent(id)}/${action}`,
          o.reason ? { reason: o.reason } : {},
        );
        if (o.json) printJson(r);
        else printLine(`rollout ${r.id}: ${r.status}`);
      });
    withExamples(cmd, [
      `rollout ${action} 7 --reason '${ACTION_REASONS[action]}'`,
      `rollout ${action} 7 --json`,
    ]);
  }
  const stopAll = rollout
    .command('stop-all')
    .description('kill switch: pause every active rollout at once (needs --reason)')
    .option('--reason <text>', 'why (required; kept in the audit log)')
    .option('--json', 'machine-readable output')
    .action(async (o: { reason?: string; json?: boolean }) => {
      needReason(o.reason, [['stop-all', true]]);
      const r = await api<{ paused: number[] }>(conn(), 'POST', '/v1/admin/rollouts/stop-all', {
        reason: o.reason,
      });
      if (o.json) printJson(r);
      else
        printLine(`paused ${r.paused.length} rollouts${r.paused.length ? `: ${r.paused.join(', ')}` : ''}`);
    });
  withExamples(stopAll, ["rollout stop-all --reason 'bad content seen on canaries'"]);
}
