// Runs one transaction through the journal: obtain → stage → activate → probation → commit, or roll back and
// quarantine. Every step is journaled before it takes effect, so recoverAll() can finish or undo it after a
// crash; what to do at each point is decided by the pure functions in transaction.ts.
import { randomUUID } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { type Backend, makeBackend } from './backend.ts';
import { runCommand } from './command.ts';
import type { AgentConfig, ComponentConfig } from './config.ts';
import {
  asking,
  granted,
  lockGroup,
  mayActivate,
  refused,
  releasable,
  released,
  resume,
} from './fleet-lock.ts';
import { FleetLockClient } from './fleet-lock-client.ts';
import { probation } from './health.ts';
import type { ComponentJournal, FailureClass, HealthResult, Journal, Report } from './journal.ts';
import { badName, reportableVersion } from './offer.ts';
import { sleep } from './retry.ts';
import type { SignalSampler } from './signals.ts';
import { StepError } from './step-error.ts';
import {
  activating,
  begin,
  close,
  commit,
  discard,
  fail,
  isOpen,
  type OpenJournal,
  probation as probationPhase,
  recover,
  rolledBack,
  rollingBack,
  staged,
} from './transaction.ts';

/** A `reboot: true` transaction got no FleetLock slot: it stays staged (offline: discarded) and asks again later. */
export class SlotWaitError extends Error {}

/** The environment of a component's hooks, health checks and exec backend. */
export function componentEnv(comp: ComponentConfig): Record<string, string> {
  const file = comp.backend.type === 'file';
  return {
    RINGFENCE_COMPONENT: comp.name,
    RINGFENCE_COMPONENT_DIR: file ? dirname(comp.backend.path) : comp.backend.path,
    RINGFENCE_CURRENT: file ? comp.backend.path : join(comp.backend.path, 'current'),
  };
}

export class TransactionRunner {
  /**
   * Set by the boot guard, which runs before the managed service: hooks are skipped then (the service is
   * ordered after the guard, so an after_rollback `systemctl restart` would wait for the guard itself).
   */
  inBootGuard = false;
  private readonly backends = new Map<string, Backend>();
  private readonly lock: FleetLockClient;

  constructor(
    private readonly cfg: AgentConfig,
    private readonly journal: Journal,
    private readonly log: Logger,
    /** Takes a signal sample at every probation round (forced), so the next check-in reports the latest. */
    private readonly signals?: SignalSampler,
  ) {
    for (const c of cfg.components) this.backends.set(c.name, makeBackend(c, componentEnv(c)));
    this.lock = new FleetLockClient(cfg);
  }

  backend(name: string): Backend {
    const b = this.backends.get(name);
    if (!b) throw new Error(`unknown component ${name}`);
    return b;
  }

  /** Test-only crash points: with RINGFENCE_TEST_PAUSE_AT=<point>, the agent announces and waits to be killed. */
  private async crashPoint(point: string): Promise<void> {
    if (process.env.RINGFENCE_TEST_PAUSE_AT !== point) return;
    writeFileSync(join(this.cfg.state_dir, 'paused-at'), point);
    for (;;) await sleep(60_000);
  }

  /** Recovers every component from its journal: finishes or undoes whatever a crash interrupted. */
  async recoverAll(by: 'agent' | 'guard' = 'agent'): Promise<Array<{ component: string; action: string }>> {
    const done: Array<{ component: string; action: string }> = [];
    for (const comp of this.cfg.components) {
      const { journal, action } = recover(this.journal.read(comp.name), comp.max_attempts, by);
      this.journal.write(journal); // the attempt is counted before anything else can crash
      done.push({ component: comp.name, action: action.kind });
      if (action.kind === 'none' || !isOpen(journal)) continue;
      this.log.warn(
        { component: comp.name, txn: journal.txn, action, by },
        'recovering interrupted transaction',
      );
      if (action.kind === 'discard') {
        this.backend(comp.name).prune([journal.current, journal.previous]);
        this.journal.write({ ...discard(journal), slotWait: null }); // a wait for a slot starts over
      } else if (action.kind === 'probation') {
        // The boot guard only counts and rolls back; judging health again is the agent's job, after the service started.
        if (by === 'agent') await this.recoverSwitched(comp, journal);
      } else if (action.kind === 'rollback') {
        await this.rollback(comp, fail(journal, action.class, action.reason));
      } else if (action.kind === 'report') {
        this.finish(comp, journal);
      }
    }
    // A slot held across a crash or a boot-guard rollback is given back once its transaction is over; the boot
    // guard runs before the network is up and leaves that to the agent.
    if (by === 'agent') await this.releaseSlots();
    return done;
  }

  /** Runs one transaction to its end: committed, or rolled back and quarantined; throws when refused before staging. */
  async transact(
    comp: ComponentConfig,
    version: string,
    offline: boolean,
    obtain: (txn: string) => Promise<Array<{ name: string; path: string }>>,
  ): Promise<ComponentJournal> {
    const bad = badName(version, 'version'); // checked with the whole offer before; never trusted here either
    if (bad) {
      this.refuse(comp, reportableVersion(version), 'invalid', `invalid offer: ${bad}`, offline);
      throw new StepError('invalid', `invalid offer: ${bad}`);
    }
    const j = begin(this.journal.read(comp.name), `txn-${randomUUID()}`, version, Date.now(), offline);
    this.journal.write(j);
    this.log.info({ component: comp.name, version, txn: j.txn.id, offline }, 'transaction started');
    const ready = await this.stage(comp, j, obtain);
    return this.activateWithSlot(comp, comp.reboot ? await this.takeSlot(comp, ready, offline) : ready);
  }

  /**
   * Finishes a transaction a crash left activating or on probation. A component without `reboot: true` is
   * switched in again and judged; one with it goes through resumeSwitched and, refused a slot, stays as it is
   * (journaled with its backoff) until a check-in gets one.
   */
  private async recoverSwitched(comp: ComponentConfig, j: OpenJournal): Promise<void> {
    if (!comp.reboot) {
      await this.activateAndProbe(comp, j);
      return;
    }
    try {
      await this.resumeSwitched(comp, j);
    } catch (e) {
      if (!(e instanceof SlotWaitError)) throw e;
    }
  }

  /**
   * A `reboot: true` transaction switched in when a crash came never activates again without a live slot:
   * with `activate: systemctl reboot`, each re-run is another reboot, and the slot granted before the crash
   * may have expired and gone to another device meanwhile. Already running the new version (the reboot it
   * asked for happened), it is only judged; otherwise pre-reboot is sent again first, and refused, it waits
   * (SlotWaitError).
   */
  private async resumeSwitched(comp: ComponentConfig, j: OpenJournal): Promise<ComponentJournal> {
    if (this.backend(comp.name).active() !== j.txn.version)
      return this.activateWithSlot(comp, await this.takeSlot(comp, j, false));
    this.log.info({ component: comp.name, version: j.txn.version }, 'already switched in: judging it only');
    const switched = { ...activating(j), slotWait: null };
    this.journal.write(switched);
    const done = await this.probe(comp, switched);
    await this.releaseSlots();
    return done;
  }

  /**
   * At a check-in: a transaction waiting for a reboot slot asks again (after its backoff), or, staged, is
   * discarded when the local pin or hold or the server's positive offer of another version says so (see
   * resume). `done` when it went on to activate (or, already switched in, to be judged).
   */
  async resumeWaiting(
    comp: ComponentConfig,
    offered: string | null,
  ): Promise<'none' | 'waiting' | 'discarded' | 'done'> {
    const j = this.journal.read(comp.name);
    const r = resume(j, offered, Date.now());
    if (r.kind === 'none' || !isOpen(j)) return 'none';
    if (r.kind === 'wait') return 'waiting';
    if (r.kind === 'discard') {
      this.log.info({ component: comp.name, version: j.txn.version, why: r.why }, 'staged release dropped');
      this.backend(comp.name).prune([j.current, j.previous]);
      this.journal.write({ ...discard(j), slotWait: null });
      return 'discarded';
    }
    try {
      if (j.txn.phase === 'staged') await this.activateWithSlot(comp, await this.takeSlot(comp, j, false));
      else await this.resumeSwitched(comp, j);
    } catch (e) {
      if (e instanceof SlotWaitError) return 'waiting';
      throw e;
    }
    return 'done';
  }

  /**
   * staged → staged holding a slot: asks the FleetLock server (pre-reboot). Refused or unreachable, the
   * transaction waits staged (journaled with its backoff) and this throws SlotWaitError; an offline bundle's
   * transaction is discarded instead (nothing was switched; the bundle can be dropped in again). Recovery asks
   * the same way for a transaction left activating or on probation, which then waits in that phase.
   */
  private async takeSlot(comp: ComponentConfig, j: OpenJournal, offline: boolean): Promise<OpenJournal> {
    const group = lockGroup(this.cfg.labels, this.cfg.fleet_lock.group_label);
    const id = this.journal.identity()?.device_id;
    let asked: ComponentJournal = j;
    let answer: { ok: true } | { ok: false; reason: string };
    if (!id) answer = { ok: false, reason: 'not enrolled: no device id to hold a slot with' };
    else {
      asked = asking(j, group, Date.now());
      this.journal.write(asked); // before the request: a crash during it still gets the slot released
      answer = await this.lock.preReboot(id, group);
    }
    if (answer.ok) {
      const held = granted(asked, Date.now()) as OpenJournal;
      this.journal.write(held);
      this.log.info({ component: comp.name, group, txn: held.txn.id }, 'reboot slot taken');
      return held;
    }
    const waiting = refused(asked, answer.reason, Date.now(), this.cfg.retry) as OpenJournal;
    if (offline && j.txn.phase === 'staged') {
      this.backend(comp.name).prune([j.current, j.previous]);
      this.journal.write({ ...discard(waiting), slotWait: null });
    } else this.journal.write(waiting);
    this.log.info(
      { component: comp.name, group, reason: answer.reason, retry_at: waiting.slotWait?.next_at },
      'waiting for a reboot slot; the running release keeps running',
    );
    throw new SlotWaitError(`waiting for a reboot slot in group ${group}: ${answer.reason}`);
  }

  /** Activates only with the slot a reboot component needs (never without), then gives finished slots back. */
  private async activateWithSlot(comp: ComponentConfig, j: OpenJournal): Promise<ComponentJournal> {
    if (!mayActivate(j, comp.reboot)) throw new Error(`${comp.name}: no reboot slot held; not activating`);
    const done = await this.activateAndProbe(comp, j);
    await this.releaseSlots();
    return done;
  }

  /**
   * Gives back (steady-state) every slot whose transaction is over; one the server cannot take now is tried
   * again at the next check-in or start (the server's lease bounds it meanwhile).
   */
  async releaseSlots(): Promise<void> {
    const plan = releasable(this.cfg.components.map((c) => this.journal.read(c.name)));
    if (plan.length === 0) return;
    const id = this.journal.identity()?.device_id;
    for (const { group, components } of plan) {
      const a = id ? await this.lock.steadyState(id, group) : { ok: true as const }; // never enrolled: never asked
      if (!a.ok) {
        this.log.warn({ group, reason: a.reason }, 'reboot slot not released yet; retrying later');
        continue;
      }
      for (const c of components) this.journal.write(released(this.journal.read(c)));
      this.log.info({ group, components }, 'reboot slot released');
    }
  }

  /** downloading → staged: obtains the verified files and stages them; on failure journals the refusal and throws. */
  private async stage(
    comp: ComponentConfig,
    started: OpenJournal,
    obtain: (txn: string) => Promise<Array<{ name: string; path: string }>>,
  ): Promise<OpenJournal> {
    const { id, version, offline = false } = started.txn;
    const staging = join(this.cfg.state_dir, 'downloads', `verified-${id}`);
    try {
      const files = await obtain(id);
      await this.crashPoint('downloaded');
      try {
        await this.backend(comp.name).stage(version, files);
      } catch (e) {
        // An unsafe path caught by within() keeps its class `invalid`; anything else is a staging failure.
        throw e instanceof StepError ? e : new StepError('stage', (e as Error).message);
      }
      const j = { ...staged(started), refused: null };
      this.journal.write(j);
      await this.crashPoint('staged');
      return j;
    } catch (e) {
      const err = e instanceof StepError ? e : new StepError('download', (e as Error).message);
      // Nothing was switched: the running release was never touched. Retry later unless content was bad.
      this.recordRefusal(comp, discard(started), id, version, err, offline);
      throw err;
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  }

  /**
   * Refuses an offer before any transaction starts (an invalid offer: offer.ts): nothing is written but the
   * journal's `refused` note and, once per distinct refusal, a report with outcome `refused`.
   */
  refuse(
    comp: ComponentConfig,
    version: string,
    cls: FailureClass,
    reason: string,
    offline = false,
  ): ComponentJournal {
    return this.recordRefusal(
      comp,
      this.journal.read(comp.name),
      `txn-${randomUUID()}`,
      version,
      new StepError(cls, reason),
      offline,
    );
  }

  /** Journals a refusal and queues its report unless the same one was reported already. */
  private recordRefusal(
    comp: ComponentConfig,
    j: ComponentJournal,
    txnId: string,
    version: string,
    err: StepError,
    offline: boolean,
  ): ComponentJournal {
    this.log.warn(
      { component: comp.name, version, class: err.cls, err: err.message },
      'transaction aborted before activation; the last good release keeps running',
    );
    // Bounded as the server's report schema requires (version 128, reason 2000 characters).
    const reason = err.message.length > 2000 ? `${err.message.slice(0, 1999)}…` : err.message;
    const v = version.length > 128 ? `${version.slice(0, 127)}…` : version;
    const report: Report = {
      txn_id: txnId,
      component: comp.name,
      version: v,
      from_version: j.current,
      outcome: 'refused',
      class: err.cls,
      reason,
      at: Date.now(),
      offline: offline || undefined,
    };
    let refused = j.refused ?? null;
    if (err.cls !== 'download') {
      // The same refusal offered again every poll is reported once, not once per check-in.
      const same =
        refused?.version === v &&
        refused.class === err.cls &&
        refused.reason.slice(0, 200) === reason.slice(0, 200);
      if (!same) this.journal.enqueue(report);
      refused = { version: v, class: err.cls, reason, at: report.at };
    }
    const next = { ...j, refused }; // an open transaction (if any) is left exactly as it was
    this.journal.write(next);
    return next;
  }

  /** Runs a component hook (before_activate, after_activate, after_rollback); throws when it fails. */
  private async hook(
    comp: ComponentConfig,
    name: 'before_activate' | 'after_activate' | 'after_rollback',
    version: string | null,
  ) {
    const cmd = comp.hooks[name];
    if (!cmd) return;
    const r = await runCommand(cmd, {
      cwd: componentEnv(comp).RINGFENCE_COMPONENT_DIR,
      timeout: comp.hooks.timeout,
      env: { ...componentEnv(comp), RINGFENCE_HOOK: name, RINGFENCE_VERSION: version ?? '' },
    });
    if (!r.ok) throw new Error(`${name} hook failed: ${r.output.trim().split('\n').slice(-2).join(' / ')}`);
  }

  /** → activating → probation → committed, or rolled back at the first failure. */
  private async activateAndProbe(comp: ComponentConfig, journal: OpenJournal): Promise<ComponentJournal> {
    const j = activating(journal);
    this.journal.write(j);
    await this.crashPoint('activating');
    try {
      await this.hook(comp, 'before_activate', j.txn.version);
      await this.backend(comp.name).activate(j.txn.version); // the single atomic switch
      await this.hook(comp, 'after_activate', j.txn.version);
    } catch (e) {
      return this.rollback(comp, fail(j, 'activate', (e as Error).message));
    }
    return this.probe(comp, j);
  }

  /** activating → probation: runs the health checks; commits when they pass, rolls back when they do not. */
  private async probe(comp: ComponentConfig, switched: OpenJournal): Promise<ComponentJournal> {
    const p = probationPhase(switched);
    this.journal.write(p);
    await this.crashPoint('probation');
    const result = await probation(comp, componentEnv(comp), sleep, () =>
      this.signals ? this.signals.sample(comp, Date.now(), true) : Promise.resolve(),
    );
    const j = { ...p, lastHealth: { ok: result.ok, at: Date.now(), checks: result.checks } };
    if (!result.ok) return this.rollback(comp, healthFailure(j, result.checks));
    await this.crashPoint('before-commit');
    try {
      await this.backend(comp.name).commit(j.txn.version);
    } catch (e) {
      return this.rollback(comp, fail(j, 'activate', (e as Error).message));
    }
    const committed = commit(j);
    this.journal.write(committed); // the commit point of the bookkeeping; the switch already happened
    this.log.info({ component: comp.name, version: committed.current }, 'committed');
    return this.finish(comp, committed);
  }

  /** Switches back to the release that ran before, quarantines the failed one and reports it. */
  async rollback(comp: ComponentConfig, failed: OpenJournal): Promise<ComponentJournal> {
    const back = rollingBack(failed);
    this.journal.write(back);
    await this.crashPoint('rolling-back');
    await this.backend(comp.name).rollback(back.txn.from);
    const j = rolledBack(back);
    this.journal.write(j);
    const t = j.txn;
    this.log.warn(
      { component: comp.name, version: t.version, back_to: t.from, failure: t.failure },
      'rolled back',
    );
    try {
      if (!this.inBootGuard) await this.hook(comp, 'after_rollback', t.from);
    } catch (e) {
      this.log.error({ component: comp.name, err: (e as Error).message }, 'after_rollback hook failed');
    }
    return this.finish(comp, j);
  }

  /**
   * Settles a transaction a crash left finished but open (`committed` or `rolled-back`, before its report was
   * queued): queues the report and closes it, as recovery would.
   */
  settle(comp: ComponentConfig, j: OpenJournal): ComponentJournal {
    return this.finish(comp, j);
  }

  /** Queues the transaction's report and closes it (idempotent: the txn id de-duplicates on the server). */
  private finish(comp: ComponentConfig, j: OpenJournal): ComponentJournal {
    const t = j.txn;
    const ok = t.phase === 'committed';
    this.journal.enqueue({
      txn_id: t.id,
      component: comp.name,
      version: t.version,
      from_version: t.from,
      outcome: ok ? 'succeeded' : 'rolled-back',
      class: ok ? undefined : t.failure?.class,
      reason: ok ? undefined : t.failure?.reason,
      detail: { checks: j.lastHealth?.checks ?? [], attempts: t.attempts },
      at: Date.now(),
      offline: t.offline || !this.journal.identity() || undefined,
    });
    const closed = close(j);
    this.journal.write(closed);
    this.backend(comp.name).prune([closed.current, closed.previous]);
    return closed;
  }
}

/** The failure a failed probation records: `timeout` when a check timed out, else `health`, with each check's last line. */
function healthFailure(j: OpenJournal, checks: HealthResult[]): OpenJournal {
  const bad = checks.filter((c) => !c.ok);
  const cls: FailureClass = bad.some((c) => c.output.includes('timed out')) ? 'timeout' : 'health';
  return fail(j, cls, bad.map((c) => `${c.name}: ${c.output.trim().split('\n').pop()}`).join('; '));
}
