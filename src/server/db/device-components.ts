// Table `device_components`: What each device runs per component, as it last reported.

export interface DeviceComponentTable {
  device_id: string;
  component: string;
  version: string | null;
  state: string;
  health: string; // JSON of the last health result
  quarantined: string; // JSON string[]
  updated_at: number;
}
