// Table `desired`: What each device should run per component (written only by engine commands).

export interface DesiredTable {
  device_id: string;
  component: string;
  version: string;
  rollout_id: number;
  updated_at: number;
}
