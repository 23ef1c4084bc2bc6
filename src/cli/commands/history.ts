// `ringfence rollout devices ID` and `ringfence fleet history DEVICE`: what happened on each device.
import type { Command } from 'commander';
import {
  ASSIGNMENT_STATES,
  type CheckView,
  type DeviceHistoryPage,
  type ReportView,
  type RolloutDevicesPage,
} from '../../server/services/history-views.ts';
import { withExamples } from '../../terminal/help.ts';
import { api, type Conn, usageError } from '../client.ts';
import { printJson, printLine, terminalSafe } from '../output.ts';

/** The states `--state` accepts, as the API does. */
const STATES: readonly string[] = ASSIGNMENT_STATES;
/** Lines of a failing check's output shown under its device (the API keeps up to 2,000 characters; --json). */
const OUTPUT_LINES = 8;
/** Characters of one output line shown (its end). */
const LINE_MAX = 240;

function count(value: string, what: string, min: number, max: number): number {
  if (
    !/^\d+$/.test(value) ||
    !Number.isSafeInteger(Number(value)) ||
    Number(value) < min ||
    Number(value) > max
  )
    throw usageError(`${what} must be a whole number ${min}–${max}`);
  return Number(value);
}

/**
 * An aligned table whose rows can be followed by detail lines. Every cell goes through terminalSafe before its
 * width is measured and every line through printLine, so device-chosen text cannot reach the terminal raw.
 */
function table<T>(
  rows: T[],
  columns: Array<[string, (r: T) => unknown]>,
  after: (r: T) => void = () => {},
): void {
  const cell = (v: unknown) => (v === null || v === undefined || v === '' ? '-' : terminalSafe(v));
  const cells = rows.map((r) => columns.map(([, get]) => cell(get(r))));
  const header = columns.map(([h]) => terminalSafe(h.toUpperCase()));
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (vals: string[]) =>
    vals
      .map((v, i) => v.padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  printLine(line(header));
  rows.forEach((r, i) => {
    printLine(line(cells[i]));
    after(r);
  });
}

/** The failing checks of a report, indented, each with the end of its output. */
function printFailingChecks(report: ReportView | null, indent = '    '): void {
  if (!report || report.outcome === 'succeeded') return;
  const failing = report.checks.filter((c: CheckView) => c.result !== 'ok');
  for (const c of failing) {
    printLine(`${indent}✗ ${c.name}${c.duration_ms === null ? '' : ` (${c.duration_ms} ms)`}`);
    const text = c.output.replace(/\s+$/, '');
    if (!text) continue;
    const lines = text.split(/\r?\n/);
    const shown = lines.slice(-OUTPUT_LINES);
    if (c.output_truncated || lines.length > shown.length) printLine(`${indent}  …`);
    for (const l of shown) printLine(`${indent}  | ${l.length > LINE_MAX ? `…${l.slice(-LINE_MAX)}` : l}`);
  }
  if (report.checks_omitted > 0) printLine(`${indent}(${report.checks_omitted} more checks: --json)`);
  if (report.detail_truncated) printLine(`${indent}(the device's detail was too large and was not kept)`);
}

function when(at: number | null): string {
  return at === null
    ? '-'
    : new Date(at)
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d+Z$/, 'Z');
}

function sub(program: Command, name: string): Command {
  const c = program.commands.find((x) => x.name() === name);
  if (!c) throw new Error(`the "${name}" command must be registered before the history commands`);
  return c;
}

/** Adds the per-device views to the existing `rollout` and `fleet` commands. */
export function historyCommands(program: Command, conn: () => Conn): void {
  const devicesCmd = sub(program, 'rollout')
    .command('devices')
    .description("a rollout's devices: wave, state, versions, failure class and reason, failing checks")
    .argument('<id>', 'rollout id')
    .option('--state <state>', `only devices in this state (${STATES.join(', ')})`)
    .option('--limit <n>', 'devices per page (1–1000)', '100')
    .option('--offset <n>', 'devices to skip', '0')
    .option('--all', 'every page')
    .option('--json', 'machine-readable output')
    .action(
      async (
        id: string,
        o: { state?: string; limit: string; offset: string; all?: boolean; json?: boolean },
      ) => {
        if (!/^\d+$/.test(id)) throw usageError('the rollout id is a number (ringfence rollout list)');
        if (o.state !== undefined && !STATES.includes(o.state))
          throw usageError(`--state must be one of ${STATES.join(', ')}`);
        const limit = count(o.limit, '--limit', 1, 1000);
        let offset = count(o.offset, '--offset', 0, Number.MAX_SAFE_INTEGER);
        let page: RolloutDevicesPage | null = null;
        const devices: RolloutDevicesPage['devices'] = [];
        for (;;) {
          const qs = new URLSearchParams({ limit: String(limit), offset: String(offset) });
          if (o.state) qs.set('state', o.state);
          page = await api<RolloutDevicesPage>(
            conn(),
            'GET',
            `/v1/admin/rollouts/${encodeURIComponent(id)}/devices?${qs}`,
          );
          devices.push(...page.devices);
          if (!o.all || page.next_offset === null) break;
          offset = page.next_offset;
        }
        const result = { ...page, devices, next_offset: o.all ? null : page.next_offset };
        if (o.json) return printJson(result);
        const r = result.rollout;
        printLine(
          `rollout ${r.id}: ${r.component}@${r.version} via ${r.plan} — ${r.status}; ${
            o.state ? `${result.total} ${o.state}` : `${result.total} devices`
          } (${Object.entries(result.states)
            .map(([s, n]) => `${s} ${n}`)
            .join(', ')})`,
        );
        if (devices.length === 0) return printLine('no devices');
        table(
          devices,
          [
            ['device', (d) => d.name],
            ['wave', (d) => `${d.wave.index + 1}:${d.wave.name ?? '?'}`],
            ['state', (d) => d.state],
            ['from → to', (d) => `${d.from_version ?? '-'} → ${d.to_version}`],
            ['class', (d) => d.class],
            ['reason', (d) => d.reason],
          ],
          (d) => printFailingChecks(d.report),
        );
        const shownTo = result.offset + devices.length;
        if (result.next_offset !== null)
          printLine(
            `showing ${result.offset + 1}–${shownTo} of ${result.total}; next page: --offset ${result.next_offset} (or --all)`,
          );
      },
    );
  withExamples(devicesCmd, [
    'rollout devices 7 --state failed   # why each failed, with the end of its failing checks',
    'rollout devices 7 --all --json',
  ]);

  const historyCmd = sub(program, 'fleet')
    .command('history')
    .description("a device's transactions across rollouts, newest first, with failing checks")
    .argument('<device>', 'device id or name')
    .option('--limit <n>', 'transactions per page (1–1000)', '100')
    .option('--offset <n>', 'transactions to skip', '0')
    .option('--json', 'machine-readable output')
    .action(async (device: string, o: { limit: string; offset: string; json?: boolean }) => {
      const qs = new URLSearchParams({
        limit: String(count(o.limit, '--limit', 1, 1000)),
        offset: String(count(o.offset, '--offset', 0, Number.MAX_SAFE_INTEGER)),
      });
      const h = await api<DeviceHistoryPage>(
        conn(),
        'GET',
        `/v1/admin/devices/${encodeURIComponent(device)}/history?${qs}`,
      );
      if (o.json) return printJson(h);
      printLine(
        `${h.device.name} (${h.device.id})${h.device.retired_at === null ? '' : `, retired ${when(h.device.retired_at)}`}: ${h.total} transactions`,
      );
      if (h.transactions.length === 0) printLine('no transactions reported');
      else
        table(
          h.transactions,
          [
            ['received', (t) => when(t.received_at)],
            ['rollout', (t) => (t.rollout ? `${t.rollout.id} (${t.kind})` : null)],
            ['wave', (t) => (t.rollout ? (t.rollout.wave.name ?? t.rollout.wave.index + 1) : null)],
            ['release', (t) => `${t.component}@${t.version}`],
            ['outcome', (t) => t.outcome],
            ['class', (t) => t.class],
            ['reason', (t) => t.reason],
          ],
          (t) => printFailingChecks(t),
        );
      if (h.next_offset !== null)
        printLine(
          `showing ${h.offset + 1}–${h.offset + h.transactions.length} of ${h.total}; next page: --offset ${h.next_offset}`,
        );
      // Rollouts this device is in without any report (offered and silent, queued, skipped): only when every
      // transaction is on this page, so that "without a report" is true.
      const whole = h.offset === 0 && h.next_offset === null;
      const open = h.assignments.filter((a) => !h.transactions.some((t) => t.rollout?.id === a.id));
      if (whole && open.length > 0) {
        printLine('');
        printLine('rollouts without a report from this device:');
        table(open, [
          ['rollout', (a) => a.id],
          ['release', (a) => `${a.component}@${a.version}`],
          ['wave', (a) => a.wave.name ?? a.wave.index + 1],
          ['state', (a) => a.state],
          ['reason', (a) => a.reason],
        ]);
      }
    });
  withExamples(historyCmd, ['fleet history till-0042', 'fleet history till-0042 --limit 20 --json']);
}
