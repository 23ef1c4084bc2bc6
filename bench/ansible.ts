// `npm run bench:ansible`: a rollout with Ringfence against the same rollout with Ansible, on this machine, in one
// run. N hosts: for Ringfence a real `ringfence server` process and N real agent processes from the shipped build
// (dist/ringfence-agent.mjs, rebuilt when older than src/), each with its own folder; for Ansible N local hosts
// (ansible_connection=local, Debian's ansible-core), each with its own folder. Both do the same per host: stage
// the release beside the running one, switch a `current` symlink, run the release's health script (a bad release's
// exits 1), and switch back on failure. Waves / batches [1, 10%, 50%, 100%] of the fleet (Ansible's serial; the
// plan uses the same counts), no bake, zero failures allowed (max_failures 0 / max_fail_percentage 0), forks 50.
// Timed: a good release from `rollout start` to completed with every host on it (Ansible: the playbook's run);
// a bad one to "halted, nothing more offered, no host on it" (Ansible: the playbook's exit after the failed
// batch), with its exposure (hosts whose health script ran the bad release). Ratios are Ansible's time over
// Ringfence's (× faster). With --rounds R the two tools alternate (R, A / A, R / …) and the median ratio is
// reported with its spread. Writes bench/results/ansible.json.
// Options (after `npm run bench:ansible --`):
//   --hosts 50,200   fleet sizes, one fleet each (default 50)
//   --poll S         server poll_seconds told to agents (default: the server's default, 30 s); --poll 1 for a
//                    quick dev run. Targets are judged only at the default poll with wake-ups on.
//   --wake auto|off  `wake: long-poll` (auto) or `wake: off` in the agent config, where this checkout's agent knows
//                    the option (checked through src/agent/config.ts); where it does not, agents poll
//   --rounds R       rounds per fleet size (default 1)
//   --no-ansible     the Ringfence side only (also when ansible-playbook is missing: `apt-get install ansible-core`);
//                    figures printed, bench/results/ansible.json left as it is
//   --keep           keep the run's temp folder (logs of the server, agents and ansible-playbook)
// Every agent, the server and ansible-playbook run in their own process groups, killed at the end, on an error
// and on ctrl-C. Each wait has a ceiling derived from the poll interval, so a run is bounded.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  activeRelease,
  applyPlan,
  exposure,
  killAll,
  prepareRelease,
  startFleet,
  stopFleet,
  timedRollout,
  writeRelease,
} from './ansible-fleet.ts';
import {
  type AnsibleHosts,
  ansibleBatches,
  ansibleVersion,
  prepareAnsible,
  timedPlaybook,
} from './ansible-play.ts';
import { round, spread } from './stats.ts';

const { values } = parseArgs({
  options: {
    hosts: { type: 'string', default: '50' },
    poll: { type: 'string' },
    wake: { type: 'string', default: 'auto' },
    rounds: { type: 'string', default: '1' },
    'no-ansible': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
  },
});
const sizes = values.hosts!.split(',').map(Number);
const pollSeconds = values.poll ? Number(values.poll) : null;
const rounds = Math.max(1, Number(values.rounds));
if (sizes.some((n) => !Number.isInteger(n) || n < 1 || n > 1000)) throw new Error('--hosts: 1 to 1000 each');
if (pollSeconds !== null && !(Number.isInteger(pollSeconds) && pollSeconds >= 1))
  throw new Error('--poll: whole seconds ≥ 1');
if (!['auto', 'off'].includes(values.wake!)) throw new Error('--wake: auto or off');

const t00 = Date.now();
const say = (s: string) =>
  process.stdout.write(`[${((Date.now() - t00) / 1000).toFixed(0).padStart(4)} s] ${s}\n`);
// Untimed pause before each Ringfence rollout: an agent checks in at once up to 3 times after a transaction (to
// deliver its report); the next rollout starts once every agent is back to waiting (poll or wake-up hold).
const SETTLE_MS = 3000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const r1 = (x: number) => Math.round(x * 10) / 10;
const r2 = (x: number) => round(x);

let ansible = values['no-ansible'] ? null : ansibleVersion();
if (!values['no-ansible'] && !ansible)
  say('ansible-playbook not found: the Ansible side is skipped (Debian: apt-get install -y ansible-core)');
if (values['no-ansible']) ansible = null;

interface Side {
  good_s: number;
  bad_stop_s: number;
  bad_exposure?: number;
}
interface Round {
  round: number;
  order: string;
  ringfence: Side & { bad_exposed_server: number };
  ansible: (Side & { bad_exit: number }) | null;
}

/** One fleet size: both tools set up, `rounds` rounds alternating them, exposures counted at the end. */
async function benchSize(n: number) {
  const dir = mkdtempSync(join(tmpdir(), 'rf-bench-ansible-'));
  // On ctrl-C too (the exit handler of ansible-fleet.ts, registered first, has killed the processes by then).
  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  if (!values.keep) process.once('exit', removeDir);
  const batches = ansibleBatches(n);
  const poll = pollSeconds ?? 30;
  // Ceilings (a bounded run): every wave within a few poll intervals plus a margin for a busy machine.
  const goodCeiling = 120_000 + batches.length * 3 * poll * 1000 + n * 500;
  const badCeiling = 60_000 + 3 * poll * 1000;
  say(`${n} hosts: batches ${batches.join(', ')}; folder ${dir}`);
  try {
    const hosts: AnsibleHosts | null = ansible ? prepareAnsible(join(dir, 'ansible'), n) : null;
    say(`  starting the ringfence server and ${n} agents (shipped build)…`);
    const fleet = await startFleet({
      dir: join(dir, 'ringfence'),
      hosts: n,
      pollSeconds,
      wake: values.wake === 'auto',
      say,
    });
    try {
      say(
        `  fleet up: poll ${fleet.pollSeconds} s (${pollSeconds ? '--poll' : 'server default'}), wake-ups ${fleet.wake ? 'on (long-poll)' : 'off'}`,
      );
      await applyPlan(fleet, batches);
      const versions = Array.from({ length: rounds }, (_, r) => ({
        good: `${r + 1}.0.0`,
        bad: `${r + 1}.1.0`,
      }));
      const folders = new Map<string, string>();
      for (const v of versions)
        for (const [version, good] of [
          [v.good, true],
          [v.bad, false],
        ] as const) {
          const f = writeRelease(join(dir, 'releases', version), version, good);
          folders.set(version, f);
          await prepareRelease(fleet, f, version);
        }
      const out: Round[] = [];
      for (let r = 0; r < rounds; r++) {
        const { good, bad } = versions[r];
        const ringfenceFirst = r % 2 === 0;
        const row: Round = {
          round: r + 1,
          order: !hosts ? 'ringfence' : ringfenceFirst ? 'ringfence, ansible' : 'ansible, ringfence',
          ringfence: { good_s: 0, bad_stop_s: 0, bad_exposed_server: 0 },
          ansible: null,
        };
        const runRingfence = async () => {
          say(`  round ${r + 1}: ringfence rolls out good ${good}…`);
          await sleep(SETTLE_MS);
          const g = await timedRollout(fleet, good, true, goodCeiling);
          say(`    completed on ${n} hosts in ${r2(g.seconds)} s`);
          say(`  round ${r + 1}: ringfence rolls out bad ${bad}…`);
          await sleep(SETTLE_MS);
          const b = await timedRollout(fleet, bad, false, badCeiling);
          say(`    halted, no host on it, in ${r2(b.seconds)} s (server counts ${b.exposed_server} exposed)`);
          row.ringfence = {
            good_s: r2(g.seconds),
            bad_stop_s: r2(b.seconds),
            bad_exposed_server: b.exposed_server,
          };
        };
        const runAnsible = async () => {
          if (!hosts) return;
          say(`  round ${r + 1}: ansible-playbook rolls out good ${good}…`);
          const g = await timedPlaybook(hosts, good, folders.get(good)!, 1_800_000);
          const on = hosts.appDirs.filter((d) => activeRelease(d) === good).length;
          if (g.exit !== 0 || on !== n)
            throw new Error(`ansible good run: exit ${g.exit}, ${on}/${n} hosts on ${good}`);
          say(`    done on ${n} hosts in ${r2(g.seconds)} s`);
          say(`  round ${r + 1}: ansible-playbook rolls out bad ${bad}…`);
          const b = await timedPlaybook(hosts, bad, folders.get(bad)!, 600_000);
          const still = hosts.appDirs.filter((d) => activeRelease(d) === bad).length;
          if (b.exit === 0 || still !== 0)
            throw new Error(`ansible bad run: exit ${b.exit}, ${still} hosts on ${bad}`);
          say(`    stopped (exit ${b.exit}) in ${r2(b.seconds)} s`);
          row.ansible = { good_s: r2(g.seconds), bad_stop_s: r2(b.seconds), bad_exit: b.exit };
        };
        if (ringfenceFirst) {
          await runRingfence();
          await runAnsible();
        } else {
          await runAnsible();
          await runRingfence();
        }
        out.push(row);
      }
      // Exposure counted last: a host that received a bad release late (after its stop) would count too.
      for (const [r, v] of versions.entries()) {
        out[r].ringfence.bad_exposure = exposure(fleet.appDirs, v.bad);
        if (hosts && out[r].ansible) out[r].ansible!.bad_exposure = exposure(hosts.appDirs, v.bad);
      }
      return summarise(n, batches, fleet.pollSeconds, fleet.wake, out);
    } finally {
      await stopFleet(fleet);
    }
  } finally {
    if (values.keep) say(`  kept ${dir}`);
    else {
      process.off('exit', removeDir);
      removeDir();
    }
  }
}

function summarise(n: number, batches: number[], poll: number, wake: boolean, out: Round[]) {
  const rf = {
    good_s: spread(out.map((r) => r.ringfence.good_s)),
    bad_stop_s: spread(out.map((r) => r.ringfence.bad_stop_s)),
  };
  const withAnsible = out.filter((r) => r.ansible);
  const an = withAnsible.length
    ? {
        good_s: spread(withAnsible.map((r) => r.ansible!.good_s)),
        bad_stop_s: spread(withAnsible.map((r) => r.ansible!.bad_stop_s)),
      }
    : null;
  const goodRatio = withAnsible.length
    ? spread(withAnsible.map((r) => r.ansible!.good_s / r.ringfence.good_s))
    : null;
  const badRatio = withAnsible.length
    ? spread(withAnsible.map((r) => r.ansible!.bad_stop_s / r.ringfence.bad_stop_s))
    : null;
  const rfExposure = Math.max(...out.map((r) => r.ringfence.bad_exposure ?? 0));
  const anExposure = withAnsible.length
    ? Math.max(...withAnsible.map((r) => r.ansible!.bad_exposure ?? 0))
    : null;
  const realistic = pollSeconds === null && wake;
  const want = n >= 200 ? 20 : n >= 50 ? 10 : null;
  const meets =
    realistic && goodRatio && badRatio && want !== null
      ? goodRatio.median >= want && badRatio.median > 1 && rfExposure === 1
      : null;
  for (const r of out)
    say(
      `  round ${r.round} (${r.order}): good — ringfence ${r.ringfence.good_s} s` +
        (r.ansible ? `, ansible ${r.ansible.good_s} s, ${r1(r.ansible.good_s / r.ringfence.good_s)}×` : '') +
        `; bad stop — ringfence ${r.ringfence.bad_stop_s} s (exposure ${r.ringfence.bad_exposure})` +
        (r.ansible
          ? `, ansible ${r.ansible.bad_stop_s} s (exposure ${r.ansible.bad_exposure}), ${r1(r.ansible.bad_stop_s / r.ringfence.bad_stop_s)}×`
          : ''),
    );
  say(`${n} hosts, poll ${poll} s, wake-ups ${wake ? 'on' : 'off'}, ${out.length} round(s), medians:`);
  say(
    `  good release : ringfence ${rf.good_s.median} s` +
      (an && goodRatio
        ? `, ansible ${an.good_s.median} s → ${r1(goodRatio.median)}× faster (min–max ${r1(goodRatio.min)}–${r1(goodRatio.max)}×)`
        : ''),
  );
  say(
    `  bad release  : ringfence stops in ${rf.bad_stop_s.median} s, exposure ${rfExposure}` +
      (an && badRatio
        ? `; ansible ${an.bad_stop_s.median} s, exposure ${anExposure} → ${r1(badRatio.median)}× (min–max ${r1(badRatio.min)}–${r1(badRatio.max)}×)`
        : ''),
  );
  if (meets === null)
    say(
      `  targets (≥ 10× at 50, ≥ 20× at 200, bad stop faster, exposure 1) judged only at the default poll with wake-ups on and Ansible run`,
    );
  else say(`  target ≥ ${want}×, bad stop faster, exposure 1: ${meets ? 'met' : 'NOT met'}`);
  return {
    hosts: n,
    batches,
    poll_seconds: poll,
    poll_is_default: pollSeconds === null,
    wake_ups: wake,
    rounds: out,
    ringfence: { ...rf, bad_exposure_max: rfExposure },
    ansible: an && { ...an, bad_exposure_max: anExposure },
    good_ratio: goodRatio,
    bad_stop_ratio: badRatio,
    target:
      want &&
      `good ≥ ${want}× faster than Ansible, bad stop faster than Ansible's, exposure 1 (default poll, wake-ups on)`,
    meets_target: meets,
  };
}

const machine = {
  node: process.version,
  cpus: cpus().length,
  cpu: cpus()[0]?.model,
  mem_gb: Math.round(totalmem() / 2 ** 30),
};
say(`ringfence vs ansible rollout bench on ${machine.cpus} × ${machine.cpu}; ${ansible ?? 'no ansible'}`);
try {
  const rows = [];
  for (const n of sizes) rows.push(await benchSize(n));
  const dir = new URL('results', import.meta.url).pathname;
  if (!ansible) say('no comparison (Ansible side not run): bench/results/ansible.json left as it is');
  else {
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'ansible.json'),
      `${JSON.stringify({ at: new Date().toISOString(), machine, ansible, rows }, null, 2)}\n`,
    );
    say(`results written to ${join(dir, 'ansible.json')}`);
  }
} catch (e) {
  say(`bench failed: ${(e as Error).message}`);
  killAll();
  process.exitCode = 1;
}
