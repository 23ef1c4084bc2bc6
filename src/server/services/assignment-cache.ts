// A rollout's assignments kept in this process between steps, with the index the engine reads beside them, so a
// step reads only the rows written since the last one (a steady step at 1 M devices reads a few rows, not 1 M).
//
// Why it stays right with reports, other replicas and failed transactions: every write to a rollout's assignments
// takes a new revision of the rollout row (rollouts.asg_rev) and stamps it on the rows it writes
// (db/rollouts.ts nextAssignmentRev). A step reads the rollout row first (under its row lock on PostgreSQL, inside
// SQLite's single writer), so every revision up to the one it read is committed; it then reads the rows above the
// kept revision. The step's own changes are kept only once its transaction committed (`committed`, called where
// the step is announced); a kept copy newer than the database (a rolled-back write, a restored backup) is thrown
// away and read again whole, and so is one whose rollout id now names another rollout (by creation time).
// Revisions are numbers, not identities: a database restored under a running replica could reach the kept
// revision again with other rows, so every replica is restarted after a restore (operations.md, "Backup and
// restore"). Invariant for callers: a transaction does not write a rollout's assignments and then step that
// rollout (no service does; a step is the only writer that reads them back).
import { AssignmentIndex } from '../../engine/assignment-index.ts';
import type { RolloutStatus } from '../../engine/rollout-state.ts';
import { type Assignment, TERMINAL } from '../../engine/rollout-state.ts';
import { assignmentsChangedSince, loadAssignments } from '../db/assignments.ts';
import type { Db } from '../db/database.ts';

/** A rollout's assignments at a revision, and their index. */
export interface KeptAssignments {
  /** The rollout's creation time: a rollout id reused (a database restored under a running replica) is a miss. */
  createdAt: number;
  rev: number;
  assignments: Map<string, Assignment>;
  index: AssignmentIndex;
}

/** How a read was served, for step timings. */
export type CacheRead = 'kept' | 'delta' | 'full';

export class AssignmentCache {
  private readonly kept = new Map<number, KeptAssignments>();
  /** Per rollout, what its last step wrote (from revision `base` to `rev`), until the step is announced. */
  private readonly pending = new Map<number, { base: number; rev: number; changed: readonly Assignment[] }>();

  /** `maxAssignments`: assignments kept over all rollouts (0: keep none; every step reads all of its rows). */
  constructor(private readonly maxAssignments: number) {}

  /**
   * The assignments of rollout `rolloutId` (created at `createdAt`) at revision `rev`, both just read from its row
   * in `db`'s transaction.
   */
  async read(
    db: Db,
    rolloutId: number,
    createdAt: number,
    rev: number,
  ): Promise<KeptAssignments & { how: CacheRead }> {
    this.pending.delete(rolloutId); // an earlier step that never committed leaves nothing behind
    const found = this.kept.get(rolloutId);
    const k = found?.createdAt === createdAt ? found : undefined;
    if (k && k.rev === rev) return { ...k, how: 'kept' };
    if (k && k.rev < rev) {
      // Rows written since are committed (see above): applied to the kept copy even if this step fails.
      for (const a of await assignmentsChangedSince(db, rolloutId, k.rev)) this.put(k, a);
      k.rev = rev;
      return { ...k, how: 'delta' };
    }
    this.kept.delete(rolloutId);
    const assignments = await loadAssignments(db, rolloutId);
    const fresh = { createdAt, rev, assignments, index: AssignmentIndex.of(assignments.values()) };
    if (this.size() + assignments.size <= this.maxAssignments) this.kept.set(rolloutId, fresh);
    return { ...fresh, how: 'full' };
  }

  /** Records what a step wrote (revision `base` → `rev`); kept once `committed` says its transaction committed. */
  wrote(rolloutId: number, base: number, rev: number, changed: readonly Assignment[]): void {
    this.pending.set(rolloutId, { base, rev, changed });
  }

  /** The step of `rolloutId` committed and left it in `status`: its changes join the kept copy. */
  committed(rolloutId: number, status: RolloutStatus): void {
    const p = this.pending.get(rolloutId);
    this.pending.delete(rolloutId);
    const k = this.kept.get(rolloutId);
    if (!k) return;
    if (TERMINAL.has(status) || !p || p.base !== k.rev) {
      // Finished rollouts are rarely stepped again; a copy that missed a step is read again next time.
      this.kept.delete(rolloutId);
      return;
    }
    if (this.size() + p.changed.length > this.maxAssignments) {
      this.kept.delete(rolloutId);
      return;
    }
    for (const a of p.changed) this.put(k, a);
    k.rev = p.rev;
  }

  /** Forgets every kept rollout (tests; a restore under a running server). */
  clear(): void {
    this.kept.clear();
    this.pending.clear();
  }

  /** Assignments kept over all rollouts. */
  size(): number {
    let n = 0;
    for (const k of this.kept.values()) n += k.assignments.size;
    return n;
  }

  private put(k: KeptAssignments, a: Assignment): void {
    k.index.note(k.assignments.get(a.deviceId), a);
    k.assignments.set(a.deviceId, a);
  }
}
