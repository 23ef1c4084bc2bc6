// Which components' device signals the server compares now: those of rollouts with an evidence gate (`compare:`
// in any wave) that are still active. A check-in answer names them (`signals_wanted`), so agents sample and send
// signals only while a comparison needs them: without it, every device with signals configured would write a
// sample per interval whether or not anything is being compared. Cached briefly: it is read on every check-in.
import { ACTIVE } from '../../engine/rollout-state.ts';
import type { Store } from '../db/database.ts';
import { findRollout, rolloutIdsIn } from '../db/rollouts.ts';

/** How long an answer is reused: a new gated rollout reaches devices' sampling within this plus a check-in. */
export const DEMAND_TTL_MS = 5000;

export class SignalDemand {
  private cached: { at: number; components: Promise<ReadonlySet<string>> } | null = null;

  constructor(
    private readonly store: Store,
    private readonly clock: () => number,
  ) {}

  /** The components with an active rollout whose plan has an evidence gate. */
  components(): Promise<ReadonlySet<string>> {
    const now = this.clock();
    if (this.cached && now - this.cached.at < DEMAND_TTL_MS) return this.cached.components;
    const components = this.read();
    this.cached = { at: now, components };
    // A failed read is not kept: the next check-in asks again.
    components.catch(() => {
      if (this.cached?.components === components) this.cached = null;
    });
    return components;
  }

  private async read(): Promise<ReadonlySet<string>> {
    const out = new Set<string>();
    for (const id of await rolloutIdsIn(this.store.db, ACTIVE)) {
      const ro = await findRollout(this.store.db, id);
      if (ro && ACTIVE.has(ro.state.status) && ro.plan.waves.some((w) => w.compare)) out.add(ro.component);
    }
    return out;
  }
}
