// Offline updates: bundles (`ringfence bundle export`) applied with no server, by hand (`agent apply-bundle`)
// or from the inbox folder the daemon scans. Each release is verified against the pinned root with the
// bundle's own metadata and applied as a normal transaction.
import { randomUUID } from 'node:crypto';
import { mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { writeFileAtomicSync } from '../files/atomic-file.ts';
import type { BundleRelease } from '../trust/verifier/bundle-reader.ts';
import type { AgentConfig } from './config.ts';
import type { Journal } from './journal.ts';
import { checkOffer, show } from './offer.ts';
import { StepError } from './step-error.ts';
import { decide } from './transaction.ts';
import type { TransactionRunner } from './transaction-runner.ts';
import { type Verification, verifyRelease } from './verification.ts';

/** What applying an offline bundle did for one component. */
export interface BundleOutcome {
  component: string;
  version: string | null;
  outcome: 'succeeded' | 'rolled-back' | 'refused' | 'skipped';
  class?: string;
  reason?: string;
}

/** Releases one bundle manifest may list (every configured component's releases are checked like offers). */
export const MAX_BUNDLE_RELEASES = 10_000;

export class OfflineBundles {
  /** Incomplete bundles already warned about (name and size), so a slow copy is logged once per size. */
  private readonly inboxSeen = new Set<string>();

  constructor(
    private readonly cfg: AgentConfig,
    private readonly journal: Journal,
    private readonly log: Logger,
    private readonly verification: Verification,
    private readonly runner: TransactionRunner,
  ) {}

  /**
   * Applies an offline bundle (`ringfence bundle export`) with no server: the container is checked, then each
   * release for a configured component is verified against the pinned root with the bundle's own metadata,
   * and applied as a normal transaction. Local holds, pins and quarantine apply as for a server's offer.
   * Reports are queued (offline: true) and delivered at the next check-in that reaches a server.
   */
  async applyBundle(file: string): Promise<BundleOutcome[]> {
    const root = this.verification.pinnedRoot();
    if (!root)
      throw new Error(
        'no TUF root pinned on this device (trust.root in the config, or enroll once): a bundle cannot be verified',
      );
    const work = join(this.cfg.state_dir, `bundle-${randomUUID().slice(0, 8)}`);
    try {
      const { unpack } = await import('../trust/verifier/bundle-reader.ts');
      const manifest = unpack(file, work);
      // The manifest is as untrusted as a server's answer: every release for a configured component is checked
      // like an offer (offer.ts) before it is picked, verified or staged.
      const releases: unknown = (manifest as { releases?: unknown }).releases;
      if (!Array.isArray(releases))
        throw new Error(`bundle manifest is malformed: releases is ${show(releases, 40)}`);
      if (releases.length > MAX_BUNDLE_RELEASES)
        throw new Error(
          `bundle manifest lists ${releases.length} releases, more than the limit of ${MAX_BUNDLE_RELEASES}`,
        );
      const out: BundleOutcome[] = [];
      for (const comp of this.cfg.components) {
        const listed = releases.filter((r) => (r as { component?: unknown } | null)?.component === comp.name);
        if (!listed.length) continue;
        const checked = listed.map((r) =>
          checkOffer(r, { component: comp.name, maxArtifactBytes: this.cfg.limits?.max_artifact_bytes }),
        );
        const bad = checked.find((c) => !c.ok);
        if (bad && !bad.ok) {
          this.runner.refuse(comp, bad.version, 'invalid', bad.reason, true);
          out.push({
            component: comp.name,
            version: bad.version,
            outcome: 'refused',
            class: 'invalid',
            reason: bad.reason,
          });
          continue;
        }
        const rels = checked.map((c) => (c as { ok: true; offer: BundleRelease }).offer);
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
          const after = await this.runner.transact(comp, pick.version, true, async (txn) => {
            const r = await verifyRelease({
              metadataDir: join(this.cfg.state_dir, 'tuf'),
              pinnedRoot: root,
              source: work,
              component: comp.name,
              version: pick.version,
              artifacts: pick.artifacts, // names, hashes, lengths and modes: each must match the signed target
              downloadDir: join(this.cfg.state_dir, 'downloads', `verified-${txn}`),
            });
            if (!r.ok) throw new StepError(r.class, r.reason);
            // The bundle carries the vendor's metadata as the server had it (vendor-tuf/<vendor>/).
            if (comp.vendor)
              await this.verification.vendorCheck(
                {
                  component: comp.name,
                  version: pick.version,
                  artifacts: pick.artifacts.map(({ name, sha256, length }) => ({ name, sha256, length })),
                },
                { folder: join(work, 'vendor-tuf', comp.vendor) },
              );
            // The mode each file gets is the signed one (the manifest's was checked against it).
            return r.artifacts.map((a) => ({
              name: a.name,
              path: a.file!,
              ...(a.mode !== undefined ? { mode: a.mode } : {}),
            }));
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
}

/** The highest version among a bundle's releases of one component (numeric-aware comparison). */
function newest(rels: BundleRelease[]): BundleRelease {
  return [...rels].sort((a, b) => a.version.localeCompare(b.version, 'en', { numeric: true })).at(-1)!;
}
