import type { Assignment } from './rollout-state.ts';

/**
 * The step's view of the assignments: the caller's map, untouched, plus this step's changes. Copying a
 * million-entry map on every step cost more than the whole step's logic.
 */
export class AssignmentOverlay {
  private readonly over = new Map<string, Assignment>();
  constructor(private readonly base: ReadonlyMap<string, Assignment>) {}
  has(id: string): boolean {
    return this.over.has(id) || this.base.has(id);
  }
  set(id: string, a: Assignment): void {
    this.over.set(id, a);
  }
  *values(): IterableIterator<Assignment> {
    const over = this.over;
    if (over.size === 0) {
      yield* this.base.values();
      return;
    }
    for (const [id, a] of this.base) yield over.get(id) ?? a;
    for (const [id, a] of over) if (!this.base.has(id)) yield a;
  }
}
