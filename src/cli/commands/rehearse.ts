// `ringfence rehearse`: run a plan against a simulated fleet in virtual time, with faults, before touching a machine.
// The flags live here; the work, in rehearse-run.ts, loads only when the command runs.
import type { Command } from 'commander';
import { FAULT_HELP } from '../../sim/faults.ts';
import { withExamples } from '../../terminal/help.ts';
import type { Conn } from '../client.ts';
import type { RehearseOpts } from './rehearse-run.ts';

export function rehearseCommand(program: Command, conn: () => Conn): void {
  const rehearse = program
    .command('rehearse')
    .description('rehearse a plan against a simulated fleet in virtual time, with injected faults')
    .argument('<plan>', 'plan YAML')
    .option('--fleet <n|file>', 'generated fleet size, or an inventory (JSON or CSV of labels)')
    .option(
      '--from-server',
      "rehearse over the live fleet of the server (labels only; give --poll when the server's poll_seconds is not 30)",
    )
    .option(
      '--fault <spec>',
      `inject a fault (repeatable):\n${FAULT_HELP}`,
      (v: string, acc: string[]) => [...acc, v],
      [],
    )
    .option(
      '--signal <name=mean>',
      "a simulated device signal's baseline mean, events per check-in (repeatable; default 1 for each signal the plan's compare: gates name)",
      (v: string, acc: string[]) => [...acc, v],
      [],
    )
    .option('--seed <s>', 'seed: the same seed gives the same rehearsal', '1')
    .option('--report <dir>', 'write index.html (self-contained, charts) and report.json here')
    .option('--json', 'print the result as one JSON object')
    .option(
      '--checkin-every <duration>',
      "device check-in interval (default: the agent config's poll_interval, else the server default 30s)",
    )
    .option('--poll <duration>', 'the same as --checkin-every')
    .option(
      '--apply-time <duration[..duration]>',
      'download + stage + switch per device, or a range (default: fits the shortest report_deadline, at most 1m..3m)',
    )
    .option(
      '--health-time <duration>',
      "health checks after the switch before commit (default: the agent config's probation window, else a quarter of the shortest report_deadline, at most 5m)",
    )
    .option('--probation <duration>', 'the same as --health-time')
    .option(
      '--agent-config <file>',
      "take the check-in interval and probation window from a device's agent configuration",
    )
    .option(
      '--tick <duration>',
      'how soon the control plane reacts to reports (default: an eighth of the shortest report_deadline, 1s..1m)',
    )
    .option('--approve-after <duration|never>', 'an operator approves gated waves after this', '0s')
    .option('--horizon <duration>', 'give up after this much virtual time', '60d')
    .option('--emergency', 'rehearse an emergency rollout (bake times shortened)')
    .option('--start <iso>', 'virtual start time (default 2026-01-05T08:00Z)')
    .option('--quiet', 'no progress on stderr')
    .action(async (file: string, o: RehearseOpts) => {
      const { runRehearsal } = await import('./rehearse-run.ts');
      await runRehearsal(file, o, conn);
    });
  withExamples(rehearse, [
    'rehearse examples/plans/standard.yaml --fleet 5000 --fault crash:2%@tier=C',
    'rehearse plan.yaml --fleet fleet.csv --report ./rehearsal   # writes index.html and report.json',
    'rehearse plan.yaml --from-server --checkin-every 1m --health-time 5m --json',
    'rehearse plan.yaml --fleet 1000 --signal restarts=0.5 --fault shift:restarts:+100%@tier=B --report ./r',
  ]);
}
