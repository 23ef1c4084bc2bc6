// The device agent's imperative shell: enrollment, the check-in loop and the daemon. The work is done by
// the modules it wires together: transaction-runner.ts (one transaction through the journal), verification.ts
// (TUF), download.ts, offline.ts (bundles and the inbox) and local-control.ts; decisions (what to apply, how
// to recover) are the pure functions in transaction.ts.
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { json, request, trustCa } from '../net/http.ts';
import { componentState } from '../protocol/component-state.ts';
import type { CheckinRequest, ComponentReport, SignalSample } from '../protocol/device.ts';
import { VERSION } from '../version.ts';
import type { AgentConfig, ComponentConfig } from './config.ts';
import type { Offered, ServerIdentity } from './download.ts';
import { waitingNote } from './fleet-lock.ts';
import { type ComponentJournal, Journal } from './journal.ts';
import { type AgentStatus, LocalControl } from './local-control.ts';
import { badName, checkOffer, offersByComponent, reportableVersion, show } from './offer.ts';
import { type BundleOutcome, OfflineBundles } from './offline.ts';
import { backoff } from './retry.ts';
import { SignalSampler } from './signals.ts';
import { StepError } from './step-error.ts';
import { decide } from './transaction.ts';
import { componentEnv, SlotWaitError, TransactionRunner } from './transaction-runner.ts';
import { Verification } from './verification.ts';
import { holdWaits, type WakeOffer, wakeOffer } from './wake.ts';

export type { Offered } from './download.ts';

/** Enrollment and check-in answers are read up to this size: a hostile server cannot exhaust the memory. */
const MAX_ANSWER_BYTES = 32 * 1024 * 1024;
/** An enrollment or check-in exchange (body included) times out after this long: a stalled server stalls nothing. */
const EXCHANGE_MS = 120_000;
/** Reports sent per check-in (the server accepts up to 256); the rest go with the next check-ins. */
const REPORTS_PER_CHECKIN = 128;
/** The server's poll interval is clamped to this range (a 0 would make the agent hammer it). */
const MIN_POLL_SECONDS = 1;
const MAX_POLL_SECONDS = 86_400;
const DEFAULT_POLL_SECONDS = 60;
/** At most this many check-ins in a row right after a change (to deliver reports); then the poll interval. */
const MAX_QUICK_CHECKINS = 3;
/** Waits in a row cut by the network after which the agent stops checking in early (until one works again). */
const MAX_CUT_WAITS = 4;
/** Wake-ups that brought nothing new space the next wake-triggered check-ins out: 1 s, 2 s, 4 s … up to this. */
const MAX_WAKE_SPACING_MS = 60_000;
/** A device id or token: printable ASCII, no space (it goes into an HTTP header). */
const TOKEN_RE = /^[\x21-\x7e]{1,512}$/;

/** A JSON answer as an object whose fields are all still unchecked. */
function answer(v: unknown): Record<string, unknown> {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

/** A server's error message, bounded and escaped for the log. */
function message(body: Record<string, unknown>): string {
  return body.message === undefined ? '' : show(body.message, 200);
}

export class Agent {
  readonly journal: Journal;
  private readonly runner: TransactionRunner;
  private readonly verification: Verification;
  private readonly offline: OfflineBundles;
  private readonly control: LocalControl;
  private readonly signals: SignalSampler;
  /** Components whose signals the server compares now (its last answer); null: it did not say, sample all. */
  private signalsWanted: Set<string> | null = null;
  private stopping = false;
  private wakeUp: (() => void) | null = null;
  private readonly stopWaits = new AbortController();
  private caLoaded = false;

  constructor(
    readonly cfg: AgentConfig,
    readonly log: Logger,
  ) {
    this.journal = new Journal(cfg.state_dir);
    this.signals = new SignalSampler(log, componentEnv);
    this.runner = new TransactionRunner(cfg, this.journal, log, this.signals);
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

  /**
   * Runs one transaction to its end: committed, or rolled back and quarantined. The offer is checked field by
   * field first (offer.ts); an invalid one is refused (class `invalid`) before anything touches the filesystem.
   */
  async apply(
    comp: ComponentConfig,
    offer: Offered | unknown,
    id: ServerIdentity,
  ): Promise<ComponentJournal> {
    const c = checkOffer(offer, {
      component: comp.name,
      server: id.server,
      maxArtifactBytes: this.cfg.limits?.max_artifact_bytes,
    });
    if (!c.ok) {
      this.runner.refuse(comp, c.version, 'invalid', c.reason);
      throw new StepError('invalid', c.reason);
    }
    const valid = c.offer;
    return this.runner.transact(comp, valid.version, false, (txn) =>
      this.verification.obtain(valid, id, txn),
    );
  }

  /** Trusts the configured `ca:` for the https server; read when first needed, so local commands work without it. */
  private serverTls(): void {
    if (this.caLoaded || !this.cfg.ca || !this.cfg.server) return;
    let pem: Buffer;
    try {
      pem = readFileSync(this.cfg.ca);
    } catch (e) {
      throw new Error(`cannot read ca ${this.cfg.ca}: ${(e as Error).message}`);
    }
    if (!pem.includes('-----BEGIN CERTIFICATE-----'))
      throw new Error(`ca ${this.cfg.ca} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
    trustCa(this.cfg.server, pem);
    this.caLoaded = true;
  }

  private async enroll(): Promise<{ server: string; device_id: string; device_token: string }> {
    const existing = this.journal.identity();
    if (existing) return existing;
    if (!this.cfg.server || !this.cfg.enroll_token)
      throw new Error('no identity yet and no server/enroll_token configured');
    const res = await request(new URL('/v1/enroll', this.cfg.server), {
      timeoutMs: EXCHANGE_MS,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        token: this.cfg.enroll_token,
        name: this.cfg.name,
        labels: this.cfg.labels,
        agent_version: VERSION,
      }),
    });
    const body = answer(await json<unknown>(res, MAX_ANSWER_BYTES));
    if (res.status >= 300) throw new Error(`enrollment refused: HTTP ${res.status} ${message(body)}`);
    if (!TOKEN_RE.test(String(body.device_id)) || !TOKEN_RE.test(String(body.device_token)))
      throw new Error(
        `malformed enrollment answer: device_id ${show(body.device_id, 40)}, device_token of type ${typeof body.device_token}`,
      );
    this.verification.pinServerRoot(body.tuf_root, 'enrollment'); // pinned before the identity: a crash re-enrolls
    const id = {
      server: this.cfg.server,
      device_id: body.device_id as string,
      device_token: body.device_token as string,
    };
    this.journal.setIdentity(id);
    this.log.info({ device_id: id.device_id }, 'enrolled');
    return id;
  }

  /** One check-in: report state and queued results, then apply what the server wants (local controls win). */
  async checkin(): Promise<{ poll_seconds: number; changed: boolean; wake: WakeOffer | null }> {
    this.serverTls();
    const id = await this.enroll();
    // The configured server wins over the one enrolled with: moving a device to https takes effect at its next start.
    const server = this.cfg.server ?? id.server;
    const outbox = this.journal.outbox().slice(0, REPORTS_PER_CHECKIN);
    const trust = this.verification.trustMode();
    // Signals due are sampled now (all components and sources at once, each source within its timeout); a
    // sample is sent until a check-in carrying it succeeds.
    // Only components the server compares now, when it says (`signals_wanted`); all, for a server that does not.
    const wanted = this.signalsWanted;
    await Promise.all(
      this.cfg.components
        .filter((c) => wanted === null || wanted.has(c.name))
        .map((c) => this.signals.sample(c)),
    );
    const sampled = new Map<string, SignalSample>();
    const components = this.cfg.components.map((c): ComponentReport => {
      const j = this.journal.read(c.name);
      const signals = this.signals.pending(c.name);
      if (signals) sampled.set(c.name, signals);
      return {
        name: c.name,
        version: j.current,
        // The open transaction's phase, apart from the local hold and pin (the server counts both as held);
        // `state` is the older one-word form, for servers before these fields.
        phase: j.txn ? j.txn.phase : null,
        hold: j.hold,
        pin: j.pin,
        state: componentState({ phase: j.txn?.phase ?? null, hold: j.hold, pinned: j.pin !== null }),
        // `trust` lets operators see devices that still install on sha256 alone.
        health: {
          ...(j.lastHealth ? { ok: j.lastHealth.ok, at: j.lastHealth.at } : {}),
          trust,
          ...(j.refused ? { refused: { version: j.refused.version, class: j.refused.class } } : {}),
          // Staged, waiting for a FleetLock slot (fleet-lock.ts): operators see why it has not activated.
          ...(waitingNote(j) ? { waiting: waitingNote(j) } : {}),
        },
        quarantined: j.quarantined,
        ...(signals ? { signals } : {}),
      };
    });
    const up: CheckinRequest = {
      labels: this.cfg.labels,
      agent_version: VERSION,
      components,
      reports: outbox,
    };
    const res = await request(new URL('/v1/checkin', server), {
      timeoutMs: EXCHANGE_MS,
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${id.device_token}` },
      body: JSON.stringify(up),
    });
    const body = answer(await json<unknown>(res, MAX_ANSWER_BYTES));
    if (res.status >= 300) throw new Error(`check-in refused: HTTP ${res.status} ${message(body)}`);
    for (const [name, sample] of sampled) this.signals.sent(name, sample);
    this.signalsWanted = wantedSignals(body.signals_wanted);
    // Every field of the answer is checked before use.
    const pollSeconds =
      typeof body.poll_seconds === 'number' && Number.isFinite(body.poll_seconds)
        ? Math.min(MAX_POLL_SECONDS, Math.max(MIN_POLL_SECONDS, body.poll_seconds))
        : DEFAULT_POLL_SECONDS;
    if (trust === 'unverified') this.verification.pinServerRoot(body.tuf_root, 'check-in');
    const acked = new Set(Array.isArray(body.acked) ? body.acked.filter((a) => typeof a === 'string') : []);
    const all = this.journal.outbox();
    const left = all.filter((r) => !acked.has(r.txn_id));
    this.journal.setOutbox(left);
    // More reports waiting than one check-in carries, and the server took some: send the next ones at once.
    let changed = all.length > REPORTS_PER_CHECKIN && left.length < all.length;
    // A `desired` that is not a list fails the check-in; a bad offer in it is refused (offer.ts).
    const offers = offersByComponent(
      body.desired,
      this.cfg.components.map((c) => c.name),
    );
    const dl: ServerIdentity = { server, device_token: id.device_token };
    await this.runner.releaseSlots(); // a slot a failed release left behind is given back first
    for (const comp of this.cfg.components) {
      const offer = offers.get(comp.name);
      const version = offer ? reportableVersion((offer.raw as { version?: unknown } | null)?.version) : null;
      try {
        // A transaction waiting for a reboot slot asks again, or is dropped if another version is wanted. Only a
        // positive offer counts: a missing or erroneous one (a glitch) passes null, which keeps the staged release.
        const raw = (offer?.raw as { version?: unknown } | null)?.version;
        const positive = offer && !offer.error && !badName(raw, 'version') ? (raw as string) : null;
        const r = await this.runner.resumeWaiting(comp, positive);
        if (r === 'done') changed = true;
        if (r === 'done' || r === 'waiting') continue;
      } catch (e) {
        this.log.warn(
          { component: comp.name, err: (e as Error).message },
          'resuming a staged release failed',
        );
        continue;
      }
      if (!offer) continue;
      const d = decide(this.journal.read(comp.name), version);
      if (!d.apply || d.version !== version) continue;
      const queued = this.journal.outbox().length;
      try {
        if (offer.error) {
          this.runner.refuse(comp, version, 'invalid', offer.error);
          throw new StepError('invalid', offer.error);
        }
        await this.apply(comp, offer.raw, dl);
        changed = true;
      } catch (e) {
        // Waiting for a reboot slot is not a failure (takeSlot logged it; the staged release waits).
        if (!(e instanceof SlotWaitError))
          this.log.warn({ component: comp.name, err: (e as Error).message }, 'apply failed');
        // Report a new failure at once; a refusal already reported waits for the next poll (no busy loop).
        if (this.journal.outbox().length > queued) changed = true;
      }
    }
    return { poll_seconds: pollSeconds, changed, wake: wakeOffer(body, server, id.device_token) };
  }

  /**
   * The daemon loop: check in, then wait with jitter (holding wake-up waits when the server offers them, so a
   * change arrives at once); back off exponentially while the server is unreachable.
   */
  async run(): Promise<void> {
    await this.recoverAll();
    let failures = 0;
    let quick = 0; // check-ins in a row made at once: bounded, so a server cannot drive a tight loop
    let wake: WakeOffer | null = null;
    let woke = false; // this check-in was made because a wait answered changed
    let spurious = 0; // wake-ups in a row after which nothing had changed
    let lost = 0; // held waits in a row cut by a network error
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
        // Not keyed on the tag: a server flipping tags must not turn wake-ups into a tight loop.
        spurious = woke && !r.changed ? spurious + 1 : 0;
        wake = this.cfg.wake === 'off' ? null : r.wake;
        // After a transaction, report at once instead of waiting a whole poll interval.
        quick = r.changed ? quick + 1 : 0;
        waitMs =
          r.changed && quick <= MAX_QUICK_CHECKINS
            ? 0
            : (this.cfg.poll_interval ?? r.poll_seconds * 1000) * (0.8 + Math.random() * 0.4);
        if (quick > MAX_QUICK_CHECKINS) quick = 0;
      } catch (e) {
        failures++;
        wake = null;
        waitMs = backoff(failures, this.cfg.retry.base, this.cfg.retry.max);
        this.log.warn(
          { err: (e as Error).message, retry_ms: Math.round(waitMs) },
          'check-in failed; last good release keeps running',
        );
      }
      woke = false;
      if (waitMs <= 0) continue;
      const deadline = Date.now() + waitMs;
      let cut = false;
      if (wake && !this.stopping) {
        const outcome = await holdWaits(wake, deadline, this.stopWaits.signal, this.log);
        woke = outcome === 'changed';
        // A wait cut by the network (the replica holding it died, a proxy dropped it): check in again soon
        // (through the load balancer, to a live replica) rather than at the end of the interval; spaced out
        // 1 s, 2 s, 4 s … and at most MAX_CUT_WAITS times in a row.
        lost = outcome === 'lost' ? lost + 1 : 0;
        // Waits that keep failing (a proxy that resets them) stop costing extra check-ins: sleep instead.
        cut = outcome === 'lost' && lost <= MAX_CUT_WAITS;
        // A server that keeps waking the device for nothing gets its check-ins spaced out (still ≤ the interval).
        const spacing = cut ? lost : woke ? spurious : 0;
        if (spacing > 0)
          await this.pause(
            Math.min(
              1000 * 2 ** (spacing - 1) * (0.5 + Math.random()),
              MAX_WAKE_SPACING_MS,
              deadline - Date.now(),
            ),
          );
      }
      if (!woke && !cut) await this.pause(deadline - Date.now());
    }
  }

  /** Sleeps `ms` (nothing when ≤ 0); stop() ends it early. */
  private async pause(ms: number): Promise<void> {
    if (ms <= 0 || this.stopping) return;
    await new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      this.wakeUp = () => {
        clearTimeout(t);
        r();
      };
    });
  }

  stop(): void {
    this.stopping = true;
    this.stopWaits.abort();
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
  status(): AgentStatus {
    return this.control.status();
  }
}

/** The components a check-in answer asks samples of (`signals_wanted`), or null when it names none or is malformed. */
function wantedSignals(v: unknown): Set<string> | null {
  if (!Array.isArray(v)) return null;
  return new Set(v.filter((x): x is string => typeof x === 'string').slice(0, 64));
}
