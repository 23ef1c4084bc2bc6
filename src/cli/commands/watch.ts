// `ringfence rollout watch ID [--json] [--interval 1s]`: follows a rollout live until it ends. One line (or one
// JSON object per line with --json) each time its status, current wave or per-wave counts change. Exit 0 when
// it completes; 1 with the reason when it is halted, aborted or rolled back.
import type { Command } from 'commander';
import { parseDuration } from '../../engine/duration.ts';
import type { RolloutView, WaveCounts } from '../../server/services/rollout-view.ts';
import { withExamples } from '../../terminal/help.ts';
import { api, type Conn, usageError } from '../client.ts';
import { printErrorLine, printJsonLine, printLine } from '../output.ts';
import { printWaves } from './rollout.ts';

/** States after which nothing more happens by itself. `halted` waits for an operator, so watching ends there too. */
const SUCCESS = new Set(['completed']);
const FAILURE = new Set(['halted', 'aborted', 'rolled-back']);
/** Consecutive failed polls (server restarting, network blip) tolerated before giving up. */
const MAX_MISSES = 5;

const COUNTS = [
  'selected',
  'offered',
  'succeeded',
  'failed',
  'rolled_back',
  'reverted',
  'unconfirmed',
  'skipped',
] as const;

type Counts = Record<(typeof COUNTS)[number], number>;

function counts(w: Partial<WaveCounts>): Counts {
  const n = (k: (typeof COUNTS)[number]) => (typeof w[k] === 'number' ? w[k] : 0);
  return {
    selected: n('selected'),
    offered: n('offered'),
    succeeded: n('succeeded'),
    failed: n('failed'),
    rolled_back: n('rolled_back'),
    reverted: n('reverted'),
    unconfirmed: n('unconfirmed'),
    skipped: n('skipped'),
  };
}

/** What a watcher sees of a rollout; a change in any of it is news. */
function snapshot(r: RolloutView) {
  return {
    id: r.id,
    release: `${r.component}@${r.version}`,
    plan: r.plan,
    status: r.status,
    wave: r.wave,
    wave_index: r.wave_index,
    exposed: r.exposed,
    reason: r.state?.reason ?? null,
    waves: r.waves.map((w) => ({ name: w.name, ...counts(w) })),
  };
}
type Snapshot = ReturnType<typeof snapshot>;

/** One wave in a few words: "early: 1/2 succeeded, 1 in progress". Waves not started yet are left out. */
function waveWords(w: Snapshot['waves'][number]): string | null {
  if (w.selected === 0 && w.offered === 0 && w.skipped === 0) return null;
  const inProgress = Math.max(0, w.offered - w.succeeded - w.failed);
  const parts = [`${w.succeeded}/${w.selected} succeeded`];
  if (inProgress) parts.push(`${inProgress} in progress`);
  if (w.failed) parts.push(`${w.failed} failed`);
  if (w.rolled_back) parts.push(`${w.rolled_back} rolled back`);
  if (w.reverted) parts.push(`${w.reverted} reverted`);
  if (w.unconfirmed) parts.push(`${w.unconfirmed} unconfirmed`);
  if (w.skipped) parts.push(`${w.skipped} skipped`);
  return `${w.name}: ${parts.join(', ')}`;
}

function humanLine(s: Snapshot): string {
  const at = new Date().toTimeString().slice(0, 8);
  const wave = s.wave ? ` · wave ${s.wave} (${s.wave_index + 1}/${s.waves.length})` : '';
  const waves = s.waves.map(waveWords).filter((x) => x !== null);
  const hint = s.status === 'awaiting-approval' ? ` · approve with: ringfence rollout approve ${s.id}` : '';
  return `${at} ${s.status}${wave} · exposed ${s.exposed}${waves.length ? ` · ${waves.join(' · ')}` : ''}${hint}`;
}

export function watchCommand(program: Command, conn: () => Conn): void {
  const rollout = program.commands.find((c) => c.name() === 'rollout');
  if (!rollout) throw new Error('rollout watch: register the rollout command first');
  const watch = rollout
    .command('watch')
    .description(
      'follow a rollout live until it ends: exit 0 when completed, 1 when halted, aborted or rolled back',
    )
    .argument('<id>', 'rollout id')
    .option('--interval <duration>', 'how often to ask the server', '1s')
    .option('--json', 'one JSON object per line for each change')
    .action(async (id: string, o: { interval: string; json?: boolean }) => {
      let every: number;
      try {
        every = Math.max(100, parseDuration(o.interval));
      } catch (e) {
        throw usageError(`--interval: ${(e as Error).message}`);
      }
      const c = conn();
      const path = `/v1/admin/rollouts/${encodeURIComponent(id)}`;
      let last = '';
      let misses = 0;
      let headerShown = false;
      for (;;) {
        let r: RolloutView;
        try {
          r = await api<RolloutView>(c, 'GET', path);
          misses = 0;
        } catch (e) {
          // A rollout that does not exist (or a rejected token) will not get better by waiting.
          if (!/cannot reach|: 5\d\d /.test((e as Error).message) || ++misses > MAX_MISSES) throw e;
          printErrorLine(`ringfence: ${(e as Error).message} (retrying)`);
          await new Promise((res) => setTimeout(res, every));
          continue;
        }
        const s = snapshot(r);
        const key = JSON.stringify(s);
        const ended = SUCCESS.has(s.status) || FAILURE.has(s.status);
        if (key !== last) {
          last = key;
          if (o.json) printJsonLine({ at: new Date().toISOString(), ...s, ended });
          else {
            if (!headerShown) printLine(`rollout ${s.id}: ${s.release} via ${s.plan}`);
            printLine(humanLine(s));
          }
          headerShown = true;
        }
        if (ended) {
          if (!o.json) printWaves(s.waves);
          if (FAILURE.has(s.status)) {
            // Not an error of the command: the watch worked and the rollout ended badly. Its last line (or JSON
            // object, which carries the reason) says so; the exit code is for scripts.
            printErrorLine(`ringfence: rollout ${s.id} ${s.status}${s.reason ? `: ${s.reason}` : ''}`);
            process.exitCode = 1;
            return;
          }
          if (!o.json) printLine(`rollout ${s.id} completed`);
          return;
        }
        await new Promise((res) => setTimeout(res, every));
      }
    });
  withExamples(watch, [
    'rollout watch 7',
    'rollout watch 7 --json --interval 5s   # one JSON object per change, for scripts',
  ]);
}
