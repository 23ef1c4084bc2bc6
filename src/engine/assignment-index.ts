// What a step needs to know about a rollout's assignments without visiting them all: counts per wave and state,
// each wave's queued devices in queue order, its offered devices grouped by the instant they were offered, and
// the devices being reverted. A caller that keeps its assignments between steps (the server's cache, the
// simulator) keeps an index beside them and notes every change; a step reads it and never writes it. Without
// one, the step builds it from the assignments: that is the full recomputation, O(assignments), and what the
// property tests compare the kept index against.
import { ASSIGNMENT_STATES, type Assignment, type AssignmentState, NO_REPORT } from './rollout-state.ts';

/** Per wave: assignments in each state, and failures that were reports (not missed deadlines). */
export type WaveTally = Record<AssignmentState, number> & { failedReported: number };

const STATES: readonly AssignmentState[] = ASSIGNMENT_STATES;

/** An all-zero tally. */
export function emptyTally(): WaveTally {
  const t = { failedReported: 0 } as WaveTally;
  for (const s of STATES) t[s] = 0;
  return t;
}

/** Assignments of the wave the gates count: every one but the skipped. */
export function selectedOf(t: WaveTally): number {
  let n = 0;
  for (const s of STATES) if (s !== 'skipped') n += t[s];
  return n;
}

export class AssignmentIndex {
  readonly tallies = new Map<number, WaveTally>();
  /**
   * Per wave, queued device ids. Queue order is the order devices entered the assignments (`position`): ids
   * are added in that order, except a device queued again (retry), which marks its wave `disordered` until
   * the wave's queue empties; a reader then sorts by position. So a kept index and one built from the map
   * give the same order.
   */
  readonly queued = new Map<number, Set<string>>();
  readonly disordered = new Set<number>();
  /** Each device's rank in the order it first got an assignment (the caller's map order). */
  readonly position = new Map<string, number>();
  private readonly lastQueued = new Map<number, number>();
  /** Per wave, offered device ids by the instant of their offer (null: stored without one). */
  readonly offered = new Map<number, Map<number | null, Set<string>>>();
  /** Device ids in state `reverting`, any wave. */
  readonly reverting = new Set<string>();

  /** The index of these assignments (the full recomputation). */
  static of(assignments: Iterable<Assignment>): AssignmentIndex {
    const ix = new AssignmentIndex();
    for (const a of assignments) ix.add(a);
    return ix;
  }

  /** Records that a device's assignment changed from `prev` (undefined: new) to `next`. */
  note(prev: Assignment | undefined, next: Assignment): void {
    if (prev) this.remove(prev);
    this.add(next);
  }

  /** The wave's queued ids in queue order. */
  queuedIds(wave: number): Iterable<string> | undefined {
    const q = this.queued.get(wave);
    if (!q || !this.disordered.has(wave)) return q;
    const pos = this.position;
    return [...q].sort((a, b) => (pos.get(a) ?? 0) - (pos.get(b) ?? 0));
  }

  tally(wave: number): WaveTally {
    let t = this.tallies.get(wave);
    if (!t) {
      t = emptyTally();
      this.tallies.set(wave, t);
    }
    return t;
  }

  private add(a: Assignment): void {
    countInto(this.tallies, a, 1);
    let at = this.position.get(a.deviceId);
    if (at === undefined) {
      at = this.position.size;
      this.position.set(a.deviceId, at);
    }
    if (a.state === 'queued') {
      const q = setIn(this.queued, a.wave);
      const last = this.lastQueued.get(a.wave) ?? -1;
      if (at < last) this.disordered.add(a.wave);
      else this.lastQueued.set(a.wave, at);
      q.add(a.deviceId);
    } else if (a.state === 'offered') setIn(groupsIn(this.offered, a.wave), a.offeredAt).add(a.deviceId);
    else if (a.state === 'reverting') this.reverting.add(a.deviceId);
  }

  private remove(a: Assignment): void {
    countInto(this.tallies, a, -1);
    if (a.state === 'queued') {
      const q = this.queued.get(a.wave);
      q?.delete(a.deviceId);
      if (q?.size === 0) {
        this.disordered.delete(a.wave);
        this.lastQueued.delete(a.wave);
      }
    } else if (a.state === 'offered') {
      const groups = this.offered.get(a.wave);
      const g = groups?.get(a.offeredAt);
      g?.delete(a.deviceId);
      if (g && g.size === 0) groups?.delete(a.offeredAt);
    } else if (a.state === 'reverting') this.reverting.delete(a.deviceId);
  }
}

/** Adds (1) or takes away (-1) an assignment from its wave's tally. */
export function countInto(tallies: Map<number, WaveTally>, a: Assignment, by: 1 | -1): void {
  let t = tallies.get(a.wave);
  if (!t) {
    t = emptyTally();
    tallies.set(a.wave, t);
  }
  t[a.state] += by;
  if (a.state === 'failed' && a.reason !== NO_REPORT) t.failedReported += by;
}

function setIn<K>(m: Map<K, Set<string>>, k: K): Set<string> {
  let s = m.get(k);
  if (!s) {
    s = new Set();
    m.set(k, s);
  }
  return s;
}

function groupsIn(m: Map<number, Map<number | null, Set<string>>>, wave: number) {
  let g = m.get(wave);
  if (!g) {
    g = new Map();
    m.set(wave, g);
  }
  return g;
}
