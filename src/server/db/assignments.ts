// Table `assignments`: Per rollout and device: wave, state and the device's outcome.

export interface AssignmentTable {
  rollout_id: number;
  device_id: string;
  wave: number;
  state: string;
  outcome: string | null; // the device's own verdict: succeeded | failed | rolled-back
  from_version: string | null;
  offered_at: number | null;
  reported_at: number | null;
  reason: string | null;
}
