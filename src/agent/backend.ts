// One interface for every apply backend; the agent drives stage → activate → commit | rollback through it.

import { DirBackend } from './backend-dir.ts';
import { ExecBackend } from './backend-exec.ts';
import { FileBackend } from './backend-file.ts';
import type { ComponentConfig } from './config.ts';

export interface Backend {
  /** The version that is live now, or null. */
  active(): string | null;
  /** Prepares a version beside the running one; must never touch what runs. */
  stage(version: string, files: Array<{ name: string; path: string }>): Promise<void>;
  /** The single atomic switch to a staged version. */
  activate(version: string): Promise<void>;
  /** The new version passed probation. */
  commit(version: string): Promise<void>;
  /** Back to the version that ran before (null: nothing ran before). */
  rollback(to: string | null): Promise<void>;
  /** Drops staging leftovers and old versions, never the protected ones. */
  prune(protect: Array<string | null>): void;
}

export function makeBackend(c: ComponentConfig, env: Record<string, string>): Backend {
  const b = c.backend;
  if (b.type === 'dir') return new DirBackend(b.path, b.keep);
  if (b.type === 'file') return new FileBackend(b.path, b.keep);
  return new ExecBackend(b, env);
}
