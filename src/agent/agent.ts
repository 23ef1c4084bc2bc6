// The device agent's imperative shell: enrollment, the check-in loop and the daemon. The work is done by
// the modules it wires together: transaction-runner.ts (one transaction through the journal), verification.ts
// (TUF), download.ts, offline.ts (bundles and the inbox) and local-control.ts; decisions (what to apply, how
// to recover) are the pure functions in transaction.ts.
import type { Logger } from 'pino';
import { VERSION } from '../version.ts';
import type { AgentConfig, ComponentConfig } from './config.ts';
import type { Offered, ServerIdentity } from './download.ts';
import { json, request } from './http.ts';
import { type ComponentJournal, Journal } from './journal.ts';
import { LocalControl } from './local-control.ts';
import { type BundleOutcome, OfflineBundles } from './offline.ts';
import { backoff } from './retry.ts';
import { decide } from './transaction.ts';
import { TransactionRunner } from './transaction-runner.ts';
import { Verification } from './verification.ts';

export type { Offered } from './download.ts';

export class Agent {
  readonly journal: Journal;
  private readonly runner: TransactionRunner;
  private readonly verification: Verification;
  private readonly offline: OfflineBundles;
  private readonly control: LocalControl;
  private stopping = false;
  private wakeUp: (() => void) | null = null;

  constructor(
    readonly cfg: AgentConfig,
    readonly log: Logger,
  ) {
    this.journal = new Journal(cfg.state_dir);
    this.runner = new TransactionRunner(cfg, this.journal, log);
    this.verification = new Verification(cfg, log);
    this.offline = new OfflineBundles(cfg, this.journal, log, this.verification, this.runner);
    this.control = new LocalControl(cfg, this.journal, this.verification, this.runner);
  }

  /** Recovers every component from its journal: finishes or undoes whatever a crash interrupted. */
  recoverAll(by: 'agent' | 'guard' = 'agent'): Promise<Array<{ component: string; action: string }>> {
    return this.runner.recoverAll(by);
  }

  /** `agent boot-guard`: runs early at boot, before the managed service; counts an attempt, rolls back past max. */
  bootGuard(): Promise<Array<{ component: string; action: string }>> {
    this.runner.inBootGuard = true; // hooks are skipped: the managed service has not started yet
    return this.recoverAll('guard');
  }

  /** Runs one transaction to its end: committed, or rolled back and quarantined. */
  async apply(comp: ComponentConfig, offer: Offered, id: ServerIdentity): Promise<ComponentJournal> {
    return this.runner.transact(comp, offer.version, false, (txn) =>
      this.verification.obtain(offer, id, txn),
    );
  }

  private async enroll(): Promise<{ server: string; device_id: string; device_token: string }> {
    const existing = this.journal.identity();
    if (existing) return existing;
    if (!this.cfg.server || !this.cfg.enroll_token)
      throw new Error('no identity yet and no server/enroll_token configured');
    const res = await request(new URL('/v1/enroll', this.cfg.server), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        token: this.cfg.enroll_token,
        name: this.cfg.name,
        labels: this.cfg.labels,
        agent_version: VERSION,
      }),
    });
    const body = await json<{
      device_id: string;
      device_token: string;
      tuf_root?: unknown;
      message?: string;
    }>(res);
    if (res.status >= 300) throw new Error(`enrollment refused: HTTP ${res.status} ${body.message ?? ''}`);
    this.verification.pinServerRoot(body.tuf_root, 'enrollment'); // pinned before the identity: a crash re-enrolls
    const id = { server: this.cfg.server, device_id: body.device_id, device_token: body.device_token };
    this.journal.setIdentity(id);
    this.log.info({ device_id: id.device_id }, 'enrolled');
    return id;
  }

  /** One check-in: report state and queued results, then apply what the server wants (local controls win). */
  async checkin(): Promise<{ poll_seconds: number; changed: boolean }> {
    const id = await this.enroll();
    const outbox = this.journal.outbox();
    const trust = this.verification.trustMode();
    const components = this.cfg.components.map((c) => {
      const j = this.journal.read(c.name);
      return {
        name: c.name,
        version: j.current,
        // A local hold or pin: the server counts both as held on the device, and shows which.
        state: j.txn ? j.txn.phase : j.hold ? 'held' : j.pin ? 'pinned' : 'idle',
        // `trust` lets operators see devices that still install on sha256 alone.
        health: {
          ...(j.lastHealth ? { ok: j.lastHealth.ok, at: j.lastHealth.at } : {}),
          trust,
          ...(j.refused ? { refused: { version: j.refused.version, class: j.refused.class } } : {}),
        },
        quarantined: j.quarantined,
      };
    });
    const res = await request(new URL('/v1/checkin', id.server), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${id.device_token}` },
      body: JSON.stringify({ labels: this.cfg.labels, agent_version: VERSION, components, reports: outbox }),
    });
    const body = await json<{
      poll_seconds: number;
      desired: Offered[];
      acked: string[];
      tuf_root?: unknown;
      message?: string;
    }>(res);
    if (res.status >= 300) throw new Error(`check-in refused: HTTP ${res.status} ${body.message ?? ''}`);
    if (trust === 'unverified') this.verification.pinServerRoot(body.tuf_root, 'check-in');
    const acked = new Set(body.acked);
    this.journal.setOutbox(this.journal.outbox().filter((r) => !acked.has(r.txn_id)));
    let changed = false;
    for (const comp of this.cfg.components) {
      const offer = body.desired.find((d) => d.component === comp.name);
      const d = decide(this.journal.read(comp.name), offer?.version ?? null);
      if (!d.apply || !offer || offer.version !== d.version) continue;
      const queued = this.journal.outbox().length;
      try {
        await this.apply(comp, offer, id);
        changed = true;
      } catch (e) {
        this.log.warn({ component: comp.name, err: (e as Error).message }, 'apply failed');
        // Report a new failure at once; a refusal already reported waits for the next poll (no busy loop).
        if (this.journal.outbox().length > queued) changed = true;
      }
    }
    return { poll_seconds: body.poll_seconds, changed };
  }

  /** The daemon loop: check in, sleep with jitter; back off exponentially while the server is unreachable. */
  async run(): Promise<void> {
    await this.recoverAll();
    let failures = 0;
    while (!this.stopping) {
      let waitMs: number;
      try {
        await this.scanInbox(); // offline bundles first: they need no server
      } catch (e) {
        this.log.error({ err: (e as Error).message }, 'offline inbox failed');
      }
      try {
        const r = await this.checkin();
        failures = 0;
        // After a transaction, report at once instead of waiting a whole poll interval.
        waitMs = r.changed
          ? 0
          : (this.cfg.poll_interval ?? r.poll_seconds * 1000) * (0.8 + Math.random() * 0.4);
      } catch (e) {
        failures++;
        waitMs = backoff(failures, this.cfg.retry.base, this.cfg.retry.max);
        this.log.warn(
          { err: (e as Error).message, retry_ms: Math.round(waitMs) },
          'check-in failed; last good release keeps running',
        );
      }
      if (waitMs > 0)
        await new Promise<void>((r) => {
          const t = setTimeout(r, waitMs);
          this.wakeUp = () => {
            clearTimeout(t);
            r();
          };
        });
    }
  }

  stop(): void {
    this.stopping = true;
    this.wakeUp?.();
  }

  /** `agent apply-bundle FILE`: applies an offline bundle with no server. */
  applyBundle(file: string): Promise<BundleOutcome[]> {
    return this.offline.applyBundle(file);
  }

  /** Applies every complete bundle in the offline inbox, then moves it to `inbox/done/` with its result. */
  scanInbox(): Promise<void> {
    return this.offline.scanInbox();
  }

  /** `agent rollback`: puts the component back on the release before it, with no server. */
  localRollback(name: string): Promise<ComponentJournal> {
    return this.control.localRollback(name);
  }

  /** `agent pin NAME@V` / `agent unpin NAME`: a local pin wins over whatever the server offers. */
  setPin(name: string, version: string | null): ComponentJournal {
    return this.control.setPin(name, version);
  }

  /** `agent clear-quarantine NAME[@V]`: lets a quarantined release be applied again. */
  clearQuarantine(name: string, version?: string): ComponentJournal {
    return this.control.clearQuarantine(name, version);
  }

  /** Digest of the local state, for `agent status`. */
  status(): Record<string, unknown> {
    return this.control.status();
  }
}
