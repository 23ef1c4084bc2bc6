// The device agent's imperative shell: check-in loop, downloads, and driving each transaction through the
// journal. Decisions (what to apply, how to recover) are the pure functions in transaction.ts.
import { createHash, randomUUID } from 'node:crypto';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { writeFileAtomicSync } from '../store/atomic-file.ts';
import type { BundleRelease } from '../trust/bundle.ts';
import type { RefusalClass } from '../trust/device-verifier.ts';
import { VERSION } from '../version.ts';
import { type Backend, makeBackend } from './backend.ts';
import { hashFile } from './backend-dir.ts';
import { runCommand } from './command.ts';
import type { AgentConfig, ComponentConfig } from './config.ts';
import { probation } from './health.ts';
import { discard, type HttpResponse, json, request } from './http.ts';
import { type ComponentJournal, type FailureClass, Journal, type Report } from './journal.ts';
import { backoff, TRANSIENT } from './retry.ts';
import { advance, begin, commit, decide, fail, recover, rolledBack } from './transaction.ts';

export interface Offered {
  component: string;
  version: string;
  artifacts: Array<{ name: string; sha256: string; length: number; url: string }>;
}

/** What applying an offline bundle did for one component. */
export interface BundleOutcome {
  component: string;
  version: string | null;
  outcome: 'succeeded' | 'rolled-back' | 'refused' | 'skipped';
  class?: string;
  reason?: string;
}

/** The root received from the server (trust on first use), when none was pre-provisioned in the config. */
export const PINNED_ROOT = 'tuf-root.json';

class StepError extends Error {
  constructor(
    readonly cls: FailureClass | RefusalClass,
    message: string,
  ) {
    super(message);
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// TUF verification (tuf-js and its models) and bundles are loaded on first use, not at start-up: an idle
// agent never needs them, and they cost a device several MB of resident memory (docs/agent.md, "Memory").
const verifyRelease = async (...a: Parameters<typeof import('../trust/device-verifier.ts').verifyRelease>) =>
  (await import('../trust/device-verifier.ts')).verifyRelease(...a);
const verifyVendorRelease = async (
  ...a: Parameters<typeof import('../trust/vendor-tuf.ts').verifyVendorRelease>
) => (await import('../trust/vendor-tuf.ts')).verifyVendorRelease(...a);

export class Agent {
  readonly journal: Journal;
  private readonly backends = new Map<string, Backend>();
  private stopping = false;
  private inBootGuard = false;
  private wakeUp: (() => void) | null = null;
  private warnedUnverified = false;
  private readonly inboxSeen = new Set<string>();

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
        if (!TRANSIENT.has(cls as FailureClass) || attempt >= this.cfg.retry.attempts) throw e;
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
    if (have === a.length) {
      // Killed after the last byte but before the rename: a Range request would only get 416, every time.
      const h = await hashFile(part);
      if (h.sha256 === a.sha256) {
        renameSync(part, file);
        return file;
      }
      rmSync(part);
      have = 0;
    }
    // Resume an interrupted download with a Range request.
    const headers: Record<string, string> = { authorization: `Bearer ${id.device_token}` };
    if (have > 0) headers.range = `bytes=${have}-`;
    let res: HttpResponse;
    try {
      res = await request(new URL(a.url, id.server), { headers });
    } catch (e) {
      throw new StepError('download', `GET ${a.url}: ${(e as Error).message}`);
    }
    if (res.status !== 200 && res.status !== 206) {
      discard(res);
      if (res.status === 416) rmSync(part, { force: true }); // the partial file is not a prefix: start over
      throw new StepError('download', `GET ${a.url}: HTTP ${res.status}`);
    }
    if (res.status === 200) have = 0;
    try {
      await pipeline(res.body, createWriteStream(part, { flags: have ? 'a' : 'w' }));
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

  /** The pinned TUF root: pre-provisioned in the config (preferred), else the one received from the server. */
  pinnedRoot(): Buffer | null {
    if (this.cfg.trust?.root) return readFileSync(this.cfg.trust.root); // missing file: throws, fail closed
    const f = join(this.cfg.state_dir, PINNED_ROOT);
    return existsSync(f) ? readFileSync(f) : null;
  }

  /** `verified` once a root is pinned: from then on every release must pass TUF verification. */
  trustMode(): 'verified' | 'unverified' {
    return this.pinnedRoot() ? 'verified' : 'unverified';
  }

  /**
   * Pins a root the server sent (enrollment or check-in) when the device has none. Trust on first use: whoever
   * answers this first request is believed, which is why a root pre-provisioned in the config is preferred.
   */
  private pinServerRoot(root: unknown, via: string): void {
    if (!root || typeof root !== 'object' || this.cfg.trust?.root) return;
    const f = join(this.cfg.state_dir, PINNED_ROOT);
    if (existsSync(f)) return; // pinned once, never replaced by the server: later roots must chain to it
    writeFileAtomicSync(f, JSON.stringify(root));
    const v = (root as { signed?: { version?: number } }).signed?.version;
    this.log.warn(
      { via, root_version: v },
      'pinned the TUF root received from the server (trust on first use); every release is verified from now on',
    );
  }

  /** Runs one transaction to its end: committed, or rolled back and quarantined. */
  async apply(
    comp: ComponentConfig,
    offer: Offered,
    id: { server: string; device_token: string },
  ): Promise<ComponentJournal> {
    return this.transact(comp, offer.version, false, (txn) => this.obtain(offer, id, txn));
  }

  /**
   * Dual control: a component with `vendor:` also needs the vendor's own signed targets (verified from the vendor's
   * pinned root) to list every artifact at the vendor's path with the offered sha256 and length. Called after the
   * organisation's check, so the vendor and the organisation agree on the bytes. Fails closed.
   */
  private async vendorCheck(
    offer: Pick<Offered, 'component' | 'version'> & {
      artifacts: Array<{ name: string; sha256: string; length: number }>;
    },
    from: { server?: string; device_token?: string; folder?: string },
  ): Promise<void> {
    const comp = this.cfg.components.find((c) => c.name === offer.component);
    if (!comp?.vendor) return;
    const v = this.cfg.trust?.vendors?.[comp.vendor];
    if (!v) throw new StepError('vendor-unavailable', `vendor ${comp.vendor} is not in trust.vendors`);
    const source =
      from.folder ??
      v.source ??
      (from.server ? new URL(`/v1/vendor-tuf/${encodeURIComponent(comp.vendor)}`, from.server).href : null);
    if (!source) throw new StepError('vendor-unavailable', `vendor ${comp.vendor}: no metadata source`);
    const r = await verifyVendorRelease({
      vendor: comp.vendor,
      rootFile: v.root,
      metadataDir: join(this.cfg.state_dir, 'vendor-tuf', comp.vendor),
      source,
      prefix: v.target_prefix,
      component: offer.component,
      version: offer.version,
      artifacts: offer.artifacts.map(({ name, sha256, length }) => ({ name, sha256, length })),
    });
    if (!r.ok) throw new StepError(r.class, r.reason);
  }

  /**
   * Gets the offered files onto the device. With a pinned root this fails closed: the release must be in the
   * organisation's signed targets (TUF, tuf-js) with the offered hashes, or it is refused before staging.
   */
  private async obtain(
    offer: Offered,
    id: { server: string; device_token: string },
    txn: string,
  ): Promise<Array<{ name: string; path: string }>> {
    const root = this.pinnedRoot();
    const download = async () => {
      const files: Array<{ name: string; path: string }> = [];
      for (const a of offer.artifacts) files.push({ name: a.name, path: await this.download(a, id) });
      return files;
    };
    if (!root) {
      if (!this.warnedUnverified)
        this.log.warn(
          'no TUF root pinned: releases are checked by sha256 only (run `ringfence keys init` on the server)',
        );
      this.warnedUnverified = true;
      await this.vendorCheck(offer, id);
      return download();
    }
    const mirror = this.cfg.trust?.mirror;
    const staging = join(this.cfg.state_dir, 'downloads', `verified-${txn}`);
    const r = await verifyRelease({
      metadataDir: join(this.cfg.state_dir, 'tuf'),
      pinnedRoot: root,
      source: mirror ?? new URL('/v1/tuf', id.server).href,
      component: offer.component,
      version: offer.version,
      artifacts: offer.artifacts.map(({ name, sha256, length }) => ({ name, sha256, length })),
      // From a mirror the targets come with the metadata; from the server the blob route resumes with Range.
      downloadDir: mirror ? staging : undefined,
      headers: mirror ? undefined : { authorization: `Bearer ${id.device_token}` },
      timeoutMs: 600_000,
    });
    if (!r.ok) {
      // Not reaching the metadata is not a verdict on the release: retried later, like a failed download.
      throw new StepError(r.class === 'unreachable' ? 'download' : r.class, r.reason);
    }
    await this.vendorCheck(offer, id);
    if (mirror) return r.artifacts.map((a) => ({ name: a.name, path: a.file! }));
    try {
      return await download(); // the offer now equals the signed hashes, which the download checks
    } catch (e) {
      if (e instanceof StepError && e.cls === 'verify')
        throw new StepError('tampered', `blob does not match its signed hash: ${e.message}`);
      throw e;
    }
  }

  private async transact(
    comp: ComponentConfig,
    version: string,
    offline: boolean,
    obtain: (txn: string) => Promise<Array<{ name: string; path: string }>>,
  ): Promise<ComponentJournal> {
    let j = begin(this.journal.read(comp.name), `txn-${randomUUID()}`, version, Date.now());
    if (offline) j = { ...j, txn: { ...j.txn!, offline: true } };
    this.journal.write(j);
    this.log.info({ component: comp.name, version, txn: j.txn?.id, offline }, 'transaction started');
    const staging = join(this.cfg.state_dir, 'downloads', `verified-${j.txn!.id}`);
    try {
      const files = await obtain(j.txn!.id);
      await this.crashPoint('downloaded');
      try {
        await this.backend(comp.name).stage(version, files);
      } catch (e) {
        throw new StepError('stage', (e as Error).message);
      }
      j = { ...advance(j, 'staged'), refused: null };
      this.journal.write(j);
      await this.crashPoint('staged');
    } catch (e) {
      const err = e instanceof StepError ? e : new StepError('download', (e as Error).message);
      // Nothing was switched: the running release was never touched. Retry later unless content was bad.
      this.log.warn(
        { component: comp.name, version, class: err.cls, err: err.message },
        'transaction aborted before activation; the last good release keeps running',
      );
      const report: Report = {
        txn_id: j.txn!.id,
        component: comp.name,
        version,
        from_version: j.txn!.from,
        outcome: 'refused',
        class: err.cls,
        reason: err.message,
        at: Date.now(),
        offline: offline || undefined,
      };
      let refused = j.refused ?? null;
      if (err.cls !== 'download') {
        // The same refusal offered again every poll is reported once, not once per check-in.
        const same =
          refused?.version === version &&
          refused.class === err.cls &&
          refused.reason.slice(0, 200) === err.message.slice(0, 200);
        if (!same) this.journal.enqueue(report);
        refused = { version, class: err.cls, reason: err.message, at: report.at };
      }
      this.journal.write({ ...j, txn: null, refused });
      throw err;
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
    return this.activateAndProbe(comp, j);
  }

  /**
   * Applies an offline bundle (`ringfence bundle export`) with no server: the container is checked, then each
   * release for a configured component is verified against the pinned root with the bundle's own metadata,
   * and applied as a normal transaction. Local holds, pins and quarantine apply as for a server's offer.
   * Reports are queued (offline: true) and delivered at the next check-in that reaches a server.
   */
  async applyBundle(file: string): Promise<BundleOutcome[]> {
    const root = this.pinnedRoot();
    if (!root)
      throw new Error(
        'no TUF root pinned on this device (trust.root in the config, or enroll once): a bundle cannot be verified',
      );
    const work = join(this.cfg.state_dir, `bundle-${randomUUID().slice(0, 8)}`);
    try {
      const { unpack } = await import('../trust/bundle.ts');
      const manifest = unpack(file, work);
      const out: BundleOutcome[] = [];
      for (const comp of this.cfg.components) {
        const rels = manifest.releases.filter((r) => r.component === comp.name);
        if (!rels.length) continue;
        const j = this.journal.read(comp.name);
        const pick = j.pin ? rels.find((r) => r.version === j.pin) : newest(rels);
        if (!pick) {
          out.push({
            component: comp.name,
            version: null,
            outcome: 'skipped',
            reason: `pinned to ${j.pin} on the device; the bundle has ${rels.map((r) => r.version).join(', ')}`,
          });
          continue;
        }
        const d = decide(j, pick.version);
        if (!d.apply) {
          out.push({ component: comp.name, version: pick.version, outcome: 'skipped', reason: d.why });
          continue;
        }
        try {
          const after = await this.transact(comp, pick.version, true, async (txn) => {
            const r = await verifyRelease({
              metadataDir: join(this.cfg.state_dir, 'tuf'),
              pinnedRoot: root,
              source: work,
              component: comp.name,
              version: pick.version,
              artifacts: pick.artifacts,
              downloadDir: join(this.cfg.state_dir, 'downloads', `verified-${txn}`),
            });
            if (!r.ok) throw new StepError(r.class, r.reason);
            // The bundle carries the vendor's metadata as the server had it (vendor-tuf/<vendor>/).
            if (comp.vendor)
              await this.vendorCheck(
                { component: comp.name, version: pick.version, artifacts: pick.artifacts },
                { folder: join(work, 'vendor-tuf', comp.vendor) },
              );
            return r.artifacts.map((a) => ({ name: a.name, path: a.file! }));
          });
          const ok = after.current === pick.version;
          const failure = after.quarantined.includes(pick.version) ? 'rolled back' : undefined;
          out.push({
            component: comp.name,
            version: pick.version,
            outcome: ok ? 'succeeded' : 'rolled-back',
            reason: ok ? undefined : failure,
          });
        } catch (e) {
          const err = e as StepError;
          out.push({
            component: comp.name,
            version: pick.version,
            outcome: 'refused',
            class: err.cls,
            reason: err.message,
          });
        }
      }
      return out;
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }

  /** Applies every complete bundle in the offline inbox, then moves it to `inbox/done/` with its result. */
  async scanInbox(): Promise<void> {
    const dir = this.cfg.offline?.inbox;
    if (!dir) return;
    let names: string[];
    try {
      names = readdirSync(dir, { withFileTypes: true })
        .filter((e) => e.isFile() && !e.name.startsWith('.') && !e.name.endsWith('.partial'))
        .map((e) => e.name)
        .sort();
    } catch {
      return;
    }
    for (const name of names) {
      const file = join(dir, name);
      let result: BundleOutcome[] | { error: string };
      try {
        result = await this.applyBundle(file);
      } catch (e) {
        const msg = (e as Error).message;
        // A bundle still being copied in has no completion marker yet: leave it for the next loop.
        if (/incomplete|truncated/.test(msg)) {
          const key = `${name}:${statSync(file).size}`;
          if (!this.inboxSeen.has(key)) this.log.warn({ bundle: file, err: msg }, 'bundle not complete yet');
          this.inboxSeen.add(key);
          continue;
        }
        this.log.error({ bundle: file, err: msg }, 'bundle refused');
        result = { error: msg };
      }
      this.log.info({ bundle: file, result }, 'offline bundle processed');
      mkdirSync(join(dir, 'done'), { recursive: true });
      writeFileAtomicSync(join(dir, 'done', `${name}.result.json`), `${JSON.stringify(result, null, 2)}\n`);
      renameSync(file, join(dir, 'done', name));
    }
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
      offline: t.offline || !this.journal.identity() || undefined,
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
    this.pinServerRoot(body.tuf_root, 'enrollment'); // pinned before the identity: a crash re-enrolls
    const id = { server: this.cfg.server, device_id: body.device_id, device_token: body.device_token };
    this.journal.setIdentity(id);
    this.log.info({ device_id: id.device_id }, 'enrolled');
    return id;
  }

  /** One check-in: report state and queued results, then apply what the server wants (local controls win). */
  async checkin(): Promise<{ poll_seconds: number; changed: boolean }> {
    const id = await this.enroll();
    const outbox = this.journal.outbox();
    const trust = this.trustMode();
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
    if (trust === 'unverified') this.pinServerRoot(body.tuf_root, 'check-in');
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
      trust: this.trustMode(),
      outbox: this.journal.outbox().length,
      components: this.cfg.components.map((c) => ({
        ...this.journal.read(c.name),
        active: this.backend(c.name).active(),
      })),
    };
  }
}

/** The highest version among a bundle's releases of one component (numeric-aware comparison). */
function newest(rels: BundleRelease[]): BundleRelease {
  return [...rels].sort((a, b) => a.version.localeCompare(b.version, 'en', { numeric: true })).at(-1)!;
}

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
