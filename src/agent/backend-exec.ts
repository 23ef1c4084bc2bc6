// The `exec` apply backend: operator-supplied commands drive an external transactional tool
// (transactional-update, rpm-ostree, bootc, apt, systemctl). Files are staged like the `dir` backend
// into <path>/releases/<version>/, then each step runs with a timeout; a failing or hanging step fails.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicSync } from '../files/atomic-file.ts';
import type { Backend } from './backend.ts';
import { DirBackend } from './backend-dir.ts';
import { runCommand } from './command.ts';
import { within } from './offer.ts';

export interface ExecBackendConfig {
  path: string;
  keep: number;
  timeout: number;
  stage?: string;
  activate: string;
  commit?: string;
  rollback: string;
}

export class ExecBackend implements Backend {
  private readonly files: DirBackend;
  private readonly activeFile: string;

  constructor(
    readonly cfg: ExecBackendConfig,
    readonly env: Record<string, string>,
  ) {
    this.files = new DirBackend(cfg.path, cfg.keep);
    this.activeFile = join(cfg.path, 'active-version');
  }

  private async run(step: string, cmd: string | undefined, version: string | null): Promise<void> {
    if (!cmd) return;
    const r = await runCommand(cmd, {
      cwd: this.cfg.path,
      timeout: this.cfg.timeout,
      env: {
        ...this.env,
        RINGFENCE_STEP: step,
        RINGFENCE_VERSION: version ?? '',
        RINGFENCE_RELEASE_DIR: version ? within(this.files.releases, version) : '',
      },
    });
    if (!r.ok)
      throw new Error(`${step} command failed: ${r.output.trim().split('\n').slice(-2).join(' / ')}`);
  }

  active(): string | null {
    return existsSync(this.activeFile) ? readFileSync(this.activeFile, 'utf8').trim() || null : null;
  }

  async stage(version: string, files: Array<{ name: string; path: string }>): Promise<void> {
    await this.files.stage(version, files);
    await this.run('stage', this.cfg.stage, version);
  }

  async activate(version: string): Promise<void> {
    await this.run('activate', this.cfg.activate, version);
    writeFileAtomicSync(this.activeFile, `${version}\n`);
  }

  async commit(version: string): Promise<void> {
    await this.run('commit', this.cfg.commit, version);
  }

  async rollback(to: string | null): Promise<void> {
    await this.run('rollback', this.cfg.rollback, to);
    writeFileAtomicSync(this.activeFile, `${to ?? ''}\n`);
  }

  prune(protect: Array<string | null>): void {
    this.files.prune(protect);
  }
}
