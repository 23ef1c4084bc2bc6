// Table `rollouts`: Rollouts: a release going through a snapshot of a plan.
import type { Generated } from 'kysely';

export interface RolloutTable {
  id: Generated<number>;
  component: string;
  version: string;
  plan_name: string;
  plan: string; // JSON snapshot of the plan at start: later edits do not change a running rollout
  status: string;
  state: string; // JSON RolloutState
  wake_at: number | null;
  dirty: number;
  created_at: number;
  updated_at: number;
  channel: string | null; // only devices of this channel; null = every device
}
