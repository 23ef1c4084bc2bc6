// Table `plans`: Rollout plans as applied.

export interface PlanTable {
  name: string;
  source: string; // YAML as applied
  plan: string; // JSON Plan (validated)
  updated_at: number;
}
