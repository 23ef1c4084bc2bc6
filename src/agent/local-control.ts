// Local control of the device with no server (`agent rollback`, `pin`, `unpin`, `clear-quarantine`,
// `status`): each acts on the journal directly; what it changes is reported at the next check-in.
import { randomUUID } from 'node:crypto';
import type { AgentConfig, ComponentConfig } from './config.ts';
import { waitingNote } from './fleet-lock.ts';
import type { ComponentJournal, Journal } from './journal.ts';
import { badName } from './offer.ts';
import { beginUndo, fail, isOpen } from './transaction.ts';
import type { TransactionRunner } from './transaction-runner.ts';
import type { Verification } from './verification.ts';

/** What `agent status` shows: identity, trust mode, reports waiting, and each component's journal and active release. */
export interface AgentStatus {
  identity: string | null;
  trust: 'verified' | 'unverified';
  outbox: number;
  /** `waiting`: why a staged release has not activated yet (a reboot slot), else null. */
  components: Array<ComponentJournal & { active: string | null; waiting: string | null }>;
}

export class LocalControl {
  constructor(
    private readonly cfg: AgentConfig,
    private readonly journal: Journal,
    private readonly verification: Verification,
    private readonly runner: TransactionRunner,
  ) {}

  private comp(name: string): ComponentConfig {
    const c = this.cfg.components.find((x) => x.name === name);
    if (!c) throw new Error(`no component ${name} in ${this.cfg.file}`);
    return c;
  }

  /**
   * `agent rollback`: with no server, puts the component back on the release before it. An unfinished
   * transaction is undone; otherwise the current release is rolled back to `previous`. Either way the
   * release taken out is quarantined and a report is queued for the server.
   */
  async localRollback(name: string): Promise<ComponentJournal> {
    const comp = this.comp(name);
    let j = this.journal.read(name);
    const why = 'rolled back on the device by an operator';
    if (isOpen(j) && (j.txn.phase === 'committed' || j.txn.phase === 'rolled-back')) {
      // Finished before a crash but not yet closed (the agent has not started since): settle it first. A
      // rolled-back one already left the component on its previous release; a committed one is undone below.
      const rolledBack = j.txn.phase === 'rolled-back';
      j = this.runner.settle(comp, j);
      if (rolledBack) return j;
    }
    if (isOpen(j)) return this.runner.rollback(comp, fail(j, 'operator', why));
    const failed = beginUndo(j, `txn-${randomUUID()}`, Date.now(), why);
    this.journal.write(failed); // a crash from here on recovers into the rollback, never a re-commit
    return this.runner.rollback(comp, failed);
  }

  /** `agent pin NAME@V` / `agent unpin NAME`: a local pin wins over whatever the server offers. */
  setPin(name: string, version: string | null): ComponentJournal {
    this.comp(name);
    const bad = version === null ? null : badName(version, 'version');
    if (bad) throw new Error(bad);
    const j = { ...this.journal.read(name), pin: version };
    this.journal.write(j);
    return j;
  }

  /** `agent clear-quarantine NAME[@V]`: lets a quarantined release be applied again. */
  clearQuarantine(name: string, version?: string): ComponentJournal {
    this.comp(name);
    const j = this.journal.read(name);
    const next = { ...j, quarantined: version ? j.quarantined.filter((v) => v !== version) : [] };
    this.journal.write(next);
    return next;
  }

  /** Digest of the local state, for `agent status`. */
  status(): AgentStatus {
    return {
      identity: this.journal.identity()?.device_id ?? null,
      trust: this.verification.trustMode(),
      outbox: this.journal.outbox().length,
      components: this.cfg.components.map((c) => ({
        ...this.journal.read(c.name),
        active: this.runner.backend(c.name).active(),
        waiting: waitingNote(this.journal.read(c.name)),
      })),
    };
  }
}
