// Release verification on the device: the organisation's TUF metadata from the pinned root (trust on first
// use when none was provisioned) and, for a component with `vendor:`, the vendor's own signed targets.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { writeFileAtomicSync } from '../files/atomic-file.ts';
import type { AgentConfig } from './config.ts';
import { download, type ObtainedFile, type Offered, type ServerIdentity } from './download.ts';
import { StepError } from './step-error.ts';

/** The root received from the server (trust on first use), when none was pre-provisioned in the config. */
export const PINNED_ROOT = 'tuf-root.json';

// TUF verification (tuf-js and its models) is loaded on first use, not at start-up: an idle agent never
// needs it, and it costs a device several MB of resident memory (docs/agent.md, "Memory").
export const verifyRelease = async (
  ...a: Parameters<typeof import('../trust/verifier/device-verifier.ts').verifyRelease>
) => (await import('../trust/verifier/device-verifier.ts')).verifyRelease(...a);
const verifyVendorRelease = async (
  ...a: Parameters<typeof import('../trust/verifier/vendor-tuf.ts').verifyVendorRelease>
) => (await import('../trust/verifier/vendor-tuf.ts')).verifyVendorRelease(...a);

export class Verification {
  private warnedUnverified = false;

  constructor(
    private readonly cfg: AgentConfig,
    private readonly log: Logger,
  ) {}

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
  pinServerRoot(root: unknown, via: string): void {
    if (!root || typeof root !== 'object' || this.cfg.trust?.root) return;
    const r = root as { signed?: { _type?: unknown }; signatures?: unknown };
    if (r.signed?._type !== 'root' || !Array.isArray(r.signatures)) {
      this.log.warn({ via }, 'ignored a tuf_root from the server that is not a TUF root');
      return;
    }
    const f = join(this.cfg.state_dir, PINNED_ROOT);
    if (existsSync(f)) return; // pinned once, never replaced by the server: later roots must chain to it
    writeFileAtomicSync(f, JSON.stringify(root));
    const v = (root as { signed?: { version?: number } }).signed?.version;
    this.log.warn(
      { via, root_version: v },
      'pinned the TUF root received from the server (trust on first use); every release is verified from now on',
    );
  }

  /**
   * Dual control: a component with `vendor:` also needs the vendor's own signed targets (verified from the vendor's
   * pinned root) to list every artifact at the vendor's path with the offered sha256 and length. Called after the
   * organisation's check, so the vendor and the organisation agree on the bytes. Fails closed.
   */
  async vendorCheck(
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
   * organisation's signed targets (TUF, tuf-js) with the offered hashes and file modes, or it is refused before
   * staging; the mode each file gets is then the signed one. Without a root it is the offered one.
   */
  async obtain(offer: Offered, id: ServerIdentity, txn: string): Promise<ObtainedFile[]> {
    const root = this.pinnedRoot();
    const downloadAll = async (modes?: Map<string, number | undefined>) => {
      const files: ObtainedFile[] = [];
      for (const a of offer.artifacts) {
        const mode = modes ? modes.get(a.name) : a.mode;
        files.push({
          name: a.name,
          path: await download(a, id, this.cfg, this.log),
          move: true, // a second copy of a large artifact costs time and disk; a retry downloads it again
          ...(mode !== undefined ? { mode } : {}),
        });
      }
      return files;
    };
    if (!root) {
      if (!this.warnedUnverified)
        this.log.warn(
          'no TUF root pinned: releases are checked by sha256 only (run `ringfence keys init` on the server)',
        );
      this.warnedUnverified = true;
      await this.vendorCheck(offer, id);
      return downloadAll();
    }
    const mirror = this.cfg.trust?.mirror;
    const staging = join(this.cfg.state_dir, 'downloads', `verified-${txn}`);
    const r = await verifyRelease({
      metadataDir: join(this.cfg.state_dir, 'tuf'),
      pinnedRoot: root,
      source: mirror ?? new URL('/v1/tuf', id.server).href,
      component: offer.component,
      version: offer.version,
      artifacts: offer.artifacts.map(({ name, sha256, length, mode }) => ({ name, sha256, length, mode })),
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
    if (mirror)
      return r.artifacts.map((a) => ({
        name: a.name,
        path: a.file!,
        move: true,
        ...(a.mode !== undefined ? { mode: a.mode } : {}),
      }));
    try {
      // The offer now equals the signed hashes, which the download checks; the modes are the signed ones.
      return await downloadAll(new Map(r.artifacts.map((a) => [a.name, a.mode])));
    } catch (e) {
      if (e instanceof StepError && e.cls === 'verify')
        throw new StepError('tampered', `blob does not match its signed hash: ${e.message}`);
      throw e;
    }
  }
}
