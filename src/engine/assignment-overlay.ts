import { type AssignmentIndex, countInto, emptyTally, type WaveTally } from './assignment-index.ts';
import type { Assignment, AssignmentState, DeviceView } from './rollout-state.ts';

/** Device ids this step put in a state, in order; an id may be stale (moved on since) and is checked on use. */
class Added {
  readonly ids: string[] = [];
  /** An id may appear twice (a device that changed more than once in this step): dedupe when reading. */
  repeats = false;
}

/**
 * The step's view of the assignments: the caller's map and index, untouched, plus this step's changes, their
 * counts (as deltas) and the ids they put in a queued, offered or reverting state. Copying a million-entry map
 * on every step cost more than the whole step's logic; reading the index instead of the map makes a steady
 * step cost what changed. The additions are append-only lists, checked on reading: a wave start adds ~1 M.
 */
export class AssignmentOverlay {
  /** This step's changes, in the order each device first changed (the step's output order). */
  private readonly over = new Map<string, Assignment>();
  private readonly tallies = new Map<number, WaveTally>();
  private readonly queuedAdded = new Map<number, Added>();
  private readonly offeredAdded = new Map<number, Map<number | null, Added>>();
  private readonly revertingAdded = new Added();
  private lastGroup: { wave: number; at: number | null; added: Added } | null = null;
  /** A starting wave's queue, counted but not yet written (see queueNew). */
  private pending: { wave: number; assignments: Assignment[]; devices: readonly DeviceView[] } | null = null;
  /** Assignments written by setTaken, in order, not yet in `over`. */
  private taken: Assignment[] | null = null;

  constructor(
    private readonly base: ReadonlyMap<string, Assignment>,
    private readonly baseIndex: AssignmentIndex,
  ) {}

  get(id: string): Assignment | undefined {
    this.flush();
    return this.over.get(id) ?? this.base.get(id);
  }
  has(id: string): boolean {
    this.flush();
    return (this.over.size > 0 && this.over.has(id)) || (this.base.size > 0 && this.base.has(id));
  }

  /** This step's changes, one per device, in the order each device first changed. */
  changes(): Assignment[] {
    const p = this.pending;
    if (p) this.flush();
    // Devices written by setTaken came after everything in `over` (any later write would have settled them).
    return this.taken ? [...this.over.values(), ...this.taken] : [...this.over.values()];
  }

  /**
   * Queues a starting wave's devices (none has an assignment yet) without writing them: counted now, written on
   * the next read, unless the step takes them first to offer (takeNew), so each is written once.
   */
  queueNew(wave: number, list: Assignment[], devices: readonly DeviceView[]): void {
    this.flush();
    for (const a of list) countInto(this.tallies, a, 1);
    this.pending = { wave, assignments: list, devices };
  }

  /** The devices queueNew left for `wave`, unwritten; the caller writes each with setTaken, in order. */
  takeNew(wave: number): { assignments: Assignment[]; devices: readonly DeviceView[] } | null {
    const p = this.pending;
    if (!p || p.wave !== wave) return null;
    this.pending = null;
    return p;
  }

  /**
   * Writes the assignment of a device taken from takeNew (`prev`: its queued assignment, counted). Into a list,
   * not the map: a million map insertions were most of a wave start, and after the offers a step rarely reads
   * those devices again; the first read that needs them moves them into the map (flush).
   */
  setTaken(prev: Assignment, a: Assignment): void {
    if (this.taken) this.taken.push(a);
    else this.taken = [a];
    if (a !== prev) {
      countInto(this.tallies, prev, -1);
      countInto(this.tallies, a, 1);
    }
    const added = this.addedFor(a);
    added?.ids.push(a.deviceId);
  }

  /** Writes what queueNew and setTaken left aside into the map, before anything reads it. */
  private flush(): void {
    const t = this.taken;
    if (t) {
      this.taken = null;
      for (const a of t) this.over.set(a.deviceId, a);
    }
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    const added = inMap(this.queuedAdded, p.wave, newAdded);
    for (const a of p.assignments) {
      this.over.set(a.deviceId, a);
      added.ids.push(a.deviceId);
    }
  }

  /** Sets a device's assignment; `isNew`: the caller knows the device has none yet (saves two lookups). */
  set(id: string, a: Assignment, isNew = false): void {
    this.flush();
    const inOver = isNew ? undefined : this.over.get(id);
    const prev = inOver ?? (isNew ? undefined : this.base.get(id));
    const again = inOver !== undefined;
    this.over.set(id, a);
    if (prev) countInto(this.tallies, prev, -1);
    countInto(this.tallies, a, 1);
    const added = this.addedFor(a);
    if (!added) return;
    if (again) added.repeats = true;
    added.ids.push(id);
  }

  /** The list of ids this step put in a's state (queued, offered at its instant, reverting), if it keeps one. */
  private addedFor(a: Assignment): Added | undefined {
    if (a.state === 'queued') return inMap(this.queuedAdded, a.wave, newAdded);
    if (a.state === 'offered') {
      // A wave start offers ~1 M devices in one instant: the last group is the next one's, mostly.
      const g = this.lastGroup;
      if (g && g.wave === a.wave && g.at === a.offeredAt) return g.added;
      const added = inMap(inMap(this.offeredAdded, a.wave, newGroups), a.offeredAt, newAdded);
      this.lastGroup = { wave: a.wave, at: a.offeredAt, added };
      return added;
    }
    if (a.state === 'reverting') return this.revertingAdded;
    return undefined;
  }

  /** Every assignment (O(assignments): only for rare operator events and rollback). */
  *values(): IterableIterator<Assignment> {
    this.flush();
    const over = this.over;
    if (over.size === 0) {
      yield* this.base.values();
      return;
    }
    for (const [id, a] of this.base) yield over.get(id) ?? a;
    for (const [id, a] of over) if (!this.base.has(id)) yield a;
  }

  /** Every wave some assignment is or was in. */
  waves(): number[] {
    return [...new Set([...this.baseIndex.tallies.keys(), ...this.tallies.keys()])].sort((a, b) => a - b);
  }

  /** Counts of a wave's assignments per state, as they stand now. */
  tally(wave: number): WaveTally {
    const t = emptyTally();
    const b = this.baseIndex.tallies.get(wave);
    const d = this.tallies.get(wave);
    for (const k of Object.keys(t) as Array<keyof WaveTally>) t[k] = (b?.[k] ?? 0) + (d?.[k] ?? 0);
    return t;
  }

  /** The wave's queued assignments in queue order: the caller's queue, then those queued by this step. */
  queued(wave: number): Iterable<Assignment> {
    this.flush();
    const q = this.baseIndex.queued.get(wave);
    return this.current(
      this.baseIndex.queuedIds(wave),
      this.queuedAdded.get(wave),
      'queued',
      wave,
      undefined,
      q,
    );
  }

  /** The wave's offered assignments, grouped by the instant of their offer. */
  offeredGroups(wave: number): Map<number | null, Iterable<Assignment>> {
    const b = this.baseIndex.offered.get(wave);
    const d = this.offeredAdded.get(wave);
    const out = new Map<number | null, Iterable<Assignment>>();
    for (const at of new Set([...(b?.keys() ?? []), ...(d?.keys() ?? [])]))
      out.set(at, this.current(b?.get(at), d?.get(at), 'offered', wave, at));
    return out;
  }

  /** Assignments in state `reverting`, any wave. */
  reverting(): Iterable<Assignment> {
    return this.current(this.baseIndex.reverting, this.revertingAdded, 'reverting', null);
  }

  /** Ids of a set of the caller's index then of this step's, kept where the assignment is (still) so. */
  private *current(
    base: Iterable<string> | undefined,
    added: Added | undefined,
    state: AssignmentState,
    wave: number | null,
    offeredAt?: number | null,
    baseSet: ReadonlySet<string> | undefined = base as ReadonlySet<string> | undefined,
  ): Generator<Assignment> {
    this.flush();
    const keep = (a: Assignment | undefined): a is Assignment =>
      a !== undefined &&
      a.state === state &&
      (wave === null || a.wave === wave) &&
      (offeredAt === undefined || a.offeredAt === offeredAt);
    const over = this.over;
    if (base)
      for (const id of base) {
        const a = over.size === 0 ? this.base.get(id) : this.get(id);
        if (keep(a)) yield a;
      }
    if (!added) return;
    const seen = added.repeats ? new Set<string>() : null;
    for (const id of added.ids) {
      if (baseSet?.has(id)) continue;
      if (seen) {
        if (seen.has(id)) continue;
        seen.add(id);
      }
      const a = over.get(id);
      if (keep(a)) yield a;
    }
  }
}

const newAdded = () => new Added();
const newGroups = () => new Map<number | null, Added>();

function inMap<K, V>(m: Map<K, V>, k: K, make: () => V): V {
  let v = m.get(k);
  if (v === undefined) {
    v = make();
    m.set(k, v);
  }
  return v;
}
