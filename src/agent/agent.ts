// The device agent's imperative shell: check-in loop, downloads, and driving each transaction through the
// journal. Decisions (what to apply, how to recover) are the pure functions in transaction.ts.
import { createHash, randomUUID } from 'node:crypto';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { VERSION } from '../version.ts';
import { type Backend, makeBackend } from './backend.ts';
import { hashFile } from './backend-dir.ts';
import { runCommand } from './command.ts';
import type { AgentConfig, ComponentConfig } from './config.ts';
import { probation } from './health.ts';
import { type ComponentJournal, type FailureClass, Journal, type Report } from './journal.ts';
import { backoff, TRANSIENT } from './retry.ts';
import { advance, begin, commit, decide, fail, recover, rolledBack } from './transaction.ts';

export interface Offered {
  component: string;
  version: string;
  artifacts: Array<{ name: string; sha256: string; length: number; url: string }>;
}

class StepError extends Error {
  constructor(
    readonly cls: FailureClass,
    message: string,
  ) {
    super(message);
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class Agent {
  readonly journal: Journal;
  private readonly backends = new Map<string, Backend>();
  private stopping = false;
  private inBootGuard = false;
  private wakeUp: (() => void) | null = null;

  constructor(
    readonly cfg: AgentConfig,
    readonly log: Logger,
  ) {
    this.journal = new Journal(cfg.state_dir);
    for (const c of cfg.components) this.backends.set(c.name, makeBackend(c, this.env(c)));
  }

  private backend(name: string): Backend {
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
      if (action.kind === 'none') continue;
      this.log.warn(
        { component: comp.name, txn: journal.txn, action, by },
        'recovering interrupted transaction',
      );
      if (action.kind === 'discard') {
        this.backend(comp.name).prune([journal.current, journal.previous]);
        this.journal.write({ ...journal, txn: null });
      } else if (action.kind === 'probation') {
        // The boot guard only counts and rolls back; judging health again is the agent's job, after the service started.
        if (by === 'agent') await this.activateAndProbe(comp, journal);
      } else if (action.kind === 'rollback') {
        await this.rollback(comp, fail(journal, action.class, action.reason));
      } else if (action.kind === 'report') {
        this.finish(comp, journal);
      }
    }
    return done;
  }

  /** `agent boot-guard`: runs early at boot, before the managed service; counts an attempt, rolls back past max. */
  bootGuard(): Promise<Array<{ component: string; action: string }>> {
    // Hooks are skipped here: the managed service has not started yet (and is ordered after the guard,
    // so an after_rollback `systemctl restart` would wait for the guard itself).
    this.inBootGuard = true;
    return this.recoverAll('guard');
  }

  /** Downloads with retries: transient failures back off exponentially with jitter; bad content is not retried. */
  async download(
    a: Offered['artifacts'][number],
    id: { server: string; device_token: string },
  ): Promise<string> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.downloadOnce(a, id);
      } catch (e) {
        const cls = e instanceof StepError ? e.cls : 'download';
        if (!TRANSIENT.has(cls) || attempt >= this.cfg.retry.attempts) throw e;
        const wait = backoff(attempt, this.cfg.retry.base, this.cfg.retry.max);
        this.log.warn(
          { artifact: a.name, attempt, retry_ms: wait, err: (e as Error).message },
          'download failed; retrying',
        );
        await sleep(wait);
      }
    }
  }

  private async downloadOnce(
    a: Offered['artifacts'][number],
    id: { server: string; device_token: string },
  ): Promise<string> {
    const dir = join(this.cfg.state_dir, 'downloads');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, a.sha256);
    if (existsSync(file)) {
      const h = await hashFile(file);
      if (h.sha256 === a.sha256 && h.length === a.length) return file;
      rmSync(file, { force: true });
    }
    const part = `${file}.part`;
    let have = existsSync(part) ? statSync(part).size : 0;
    if (have > a.length) {
      rmSync(part);
      have = 0;
    }
    // Resume an interrupted download with a Range request.
    const headers: Record<string, string> = { authorization: `Bearer ${id.device_token}` };
    if (have > 0) headers.range = `bytes=${have}-`;
    let res: Response;
    try {
      res = await fetch(new URL(a.url, id.server), { headers });
    } catch (e) {
      throw new StepError('download', `GET ${a.url}: ${(e as Error).cause ?? (e as Error).message}`);
    }
    if (res.status !== 200 && res.status !== 206)
      throw new StepError('download', `GET ${a.url}: HTTP ${res.status}`);
    if (res.status === 200) have = 0;
    if (!res.body) throw new StepError('download', `GET ${a.url}: empty body`);
    try {
      await pipeline(
        Readable.fromWeb(res.body as import('node:stream/web').ReadableStream),
        createWriteStream(part, { flags: have ? 'a' : 'w' }),
      );
    } catch (e) {
      throw new StepError('download', `GET ${a.url}: ${(e as Error).message}`); // resumed next time by Range
    }
    const h = await hashFile(part);
    if (h.length !== a.length || h.sha256 !== a.sha256) {
      rmSync(part, { force: true });
      throw new StepError(
        'verify',
        `${a.name}: expected sha256 ${a.sha256} (${a.length} bytes), got ${h.sha256} (${h.length} bytes)`,
      );
    }
    renameSync(part, file);
    return file;
  }

  /** Runs one transaction to its end: committed, or rolled back and quarantined. */
  async apply(
    comp: ComponentConfig,
    offer: Offered,
    id: { server: string; device_token: string },
  ): Promise<ComponentJournal> {
    let j = begin(this.journal.read(comp.name), `txn-${randomUUID()}`, offer.version, Date.now());
    this.journal.write(j);
    this.log.info({ component: comp.name, version: offer.version, txn: j.txn?.id }, 'transaction started');
    try {
      const files: Array<{ name: string; path: string }> = [];
      for (const a of offer.artifacts) files.push({ name: a.name, path: await this.download(a, id) });
      await this.crashPoint('downloaded');
      try {
        await this.backend(comp.name).stage(offer.version, files);
      } catch (e) {
        throw new StepError('stage', (e as Error).message);
      }
      j = advance(j, 'staged');
      this.journal.write(j);
      await this.crashPoint('staged');
    } catch (e) {
      const err = e instanceof StepError ? e : new StepError('download', (e as Error).message);
      // Nothing was switched: the running release was never touched. Retry later unless content was bad.
      this.log.warn(
        { component: comp.name, class: err.cls, err: err.message },
        'transaction aborted before activation',
      );
      const report: Report = {
        txn_id: j.txn!.id,
        component: comp.name,
        version: offer.version,
        from_version: j.txn!.from,
        outcome: 'refused',
        class: err.cls,
        reason: err.message,
        at: Date.now(),
      };
      this.journal.write({ ...j, txn: null });
      if (err.cls !== 'download') this.journal.enqueue(report);
      throw err;
    }
    return this.activateAndProbe(comp, j);
  }

  private env(comp: ComponentConfig): Record<string, string> {
    const file = comp.backend.type === 'file';
    return {
      RINGFENCE_COMPONENT: comp.name,
      RINGFENCE_COMPONENT_DIR: file ? dirname(comp.backend.path) : comp.backend.path,
      RINGFENCE_CURRENT: file ? comp.backend.path : join(comp.backend.path, 'current'),
    };
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
      cwd: this.env(comp).RINGFENCE_COMPONENT_DIR,
      timeout: comp.hooks.timeout,
      env: { ...this.env(comp), RINGFENCE_HOOK: name, RINGFENCE_VERSION: version ?? '' },
    });
    if (!r.ok) throw new Error(`${name} hook failed: ${r.output.trim().split('\n').slice(-2).join(' / ')}`);
  }

  private async activateAndProbe(
    comp: ComponentConfig,
    journal: ComponentJournal,
  ): Promise<ComponentJournal> {
    let j = advance(journal, 'activating');
    this.journal.write(j);
    await this.crashPoint('activating');
    try {
      await this.hook(comp, 'before_activate', j.txn!.version);
      await this.backend(comp.name).activate(j.txn!.version); // the single atomic switch
      await this.hook(comp, 'after_activate', j.txn!.version);
    } catch (e) {
      return this.rollback(comp, fail(j, 'activate', (e as Error).message));
    }
    j = advance(j, 'probation');
    this.journal.write(j);
    await this.crashPoint('probation');
    const result = await probation(comp, this.env(comp), sleep);
    j = { ...j, lastHealth: { ok: result.ok, at: Date.now(), checks: result.checks } };
    if (!result.ok) {
      const bad = result.checks.filter((c) => !c.ok);
      const cls: FailureClass = bad.some((c) => c.output.includes('timed out')) ? 'timeout' : 'health';
      return this.rollback(
        comp,
        fail(j, cls, bad.map((c) => `${c.name}: ${c.output.trim().split('\n').pop()}`).join('; ')),
      );
    }
    await this.crashPoint('before-commit');
    try {
      await this.backend(comp.name).commit(j.txn!.version);
    } catch (e) {
      return this.rollback(comp, fail(j, 'activate', (e as Error).message));
    }
    j = commit(j);
    this.journal.write(j); // the commit point of the bookkeeping; the switch already happened
    this.log.info({ component: comp.name, version: j.current }, 'committed');
    return this.finish(comp, j);
  }

  /** Switches back to the release that ran before, quarantines the failed one and reports it. */
  private async rollback(comp: ComponentConfig, journal: ComponentJournal): Promise<ComponentJournal> {
    let j = advance(journal, 'rolling-back');
    this.journal.write(j);
    await this.crashPoint('rolling-back');
    await this.backend(comp.name).rollback(j.txn!.from);
    j = rolledBack(j);
    this.journal.write(j);
    this.log.warn(
      { component: comp.name, version: j.txn!.version, back_to: j.txn!.from, failure: j.txn!.failure },
      'rolled back',
    );
    try {
      if (!this.inBootGuard) await this.hook(comp, 'after_rollback', j.txn!.from);
    } catch (e) {
      this.log.error({ component: comp.name, err: (e as Error).message }, 'after_rollback hook failed');
    }
    return this.finish(comp, j);
  }

  /** Queues the transaction's report and closes it (idempotent: the txn id de-duplicates on the server). */
  private finish(comp: ComponentConfig, j: ComponentJournal): ComponentJournal {
    const t = j.txn!;
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
      offline: !this.journal.identity(),
    });
    const closed = { ...j, txn: null };
    this.journal.write(closed);
    this.backend(comp.name).prune([closed.current, closed.previous]);
    return closed;
  }

  private async enroll(): Promise<{ server: string; device_id: string; device_token: string }> {
    const existing = this.journal.identity();
    if (existing) return existing;
    if (!this.cfg.server || !this.cfg.enroll_token)
      throw new Error('no identity yet and no server/enroll_token configured');
    const res = await fetch(new URL('/v1/enroll', this.cfg.server), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        token: this.cfg.enroll_token,
        name: this.cfg.name,
        labels: this.cfg.labels,
        agent_version: VERSION,
      }),
    });
    const body = (await res.json()) as { device_id: string; device_token: string; message?: string };
    if (!res.ok) throw new Error(`enrollment refused: HTTP ${res.status} ${body.message ?? ''}`);
    const id = { server: this.cfg.server, device_id: body.device_id, device_token: body.device_token };
    this.journal.setIdentity(id);
    this.log.info({ device_id: id.device_id }, 'enrolled');
    return id;
  }

  /** One check-in: report state and queued results, then apply what the server wants (local controls win). */
  async checkin(): Promise<{ poll_seconds: number; changed: boolean }> {
    const id = await this.enroll();
    const outbox = this.journal.outbox();
    const components = this.cfg.components.map((c) => {
      const j = this.journal.read(c.name);
      return {
        name: c.name,
        version: j.current,
        state: j.txn ? j.txn.phase : j.hold ? 'held' : 'idle',
        health: j.lastHealth ? { ok: j.lastHealth.ok, at: j.lastHealth.at } : {},
        quarantined: j.quarantined,
      };
    });
    const res = await fetch(new URL('/v1/checkin', id.server), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${id.device_token}` },
      body: JSON.stringify({ labels: this.cfg.labels, agent_version: VERSION, components, reports: outbox }),
    });
    const body = (await res.json()) as {
      poll_seconds: number;
      desired: Offered[];
      acked: string[];
      message?: string;
    };
    if (!res.ok) throw new Error(`check-in refused: HTTP ${res.status} ${body.message ?? ''}`);
    const acked = new Set(body.acked);
    this.journal.setOutbox(this.journal.outbox().filter((r) => !acked.has(r.txn_id)));
    let changed = false;
    for (const comp of this.cfg.components) {
      const offer = body.desired.find((d) => d.component === comp.name);
      const d = decide(this.journal.read(comp.name), offer?.version ?? null);
      if (!d.apply || !offer || offer.version !== d.version) continue;
      try {
        await this.apply(comp, offer, id);
      } catch (e) {
        this.log.warn({ component: comp.name, err: (e as Error).message }, 'apply failed');
      }
      changed = true;
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
    const j = this.journal.read(name);
    if (j.txn) return this.rollback(comp, fail(j, 'operator', 'rolled back on the device by an operator'));
    if (!j.current || !j.previous) throw new Error(`${name}: no previous release to roll back to`);
    const txn = begin(j, `txn-${randomUUID()}`, j.current, Date.now());
    // Model it as a transaction from `previous` to `current` that failed, so rollback() undoes it.
    const undo: ComponentJournal = {
      ...txn,
      current: j.previous,
      previous: null,
      txn: { ...txn.txn!, from: j.previous, phase: 'probation' },
    };
    const failed = fail(undo, 'operator', 'rolled back on the device by an operator');
    this.journal.write(failed); // a crash from here on recovers into the rollback, never a re-commit
    return this.rollback(comp, failed);
  }

  /** `agent pin NAME@V` / `agent unpin NAME`: a local pin wins over whatever the server offers. */
  setPin(name: string, version: string | null): ComponentJournal {
    this.comp(name);
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
  status(): Record<string, unknown> {
    return {
      identity: this.journal.identity()?.device_id ?? null,
      outbox: this.journal.outbox().length,
      components: this.cfg.components.map((c) => ({
        ...this.journal.read(c.name),
        active: this.backend(c.name).active(),
      })),
    };
  }
}

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
