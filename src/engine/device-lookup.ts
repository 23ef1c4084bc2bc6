import type { DeviceView } from './rollout-state.ts';

/**
 * Device lookup by id. The id → position index is memoised per fleet array, so a caller that reuses its
 * array (the simulator) does not pay for a million-entry map on every step; entries are read live from
 * the array and checked, so replacing or reordering elements is detected and the index rebuilt.
 */
const deviceIndexes = new WeakMap<readonly DeviceView[], Map<string, number>>();

export class DeviceLookup {
  private indexed: Map<string, number> | null = null;
  private rebuilt = false;
  constructor(private readonly devices: readonly DeviceView[]) {}
  /** Built on first use: a steady step that looks no device up does not pay for a fresh array's index. */
  private get index(): Map<string, number> {
    if (this.indexed) return this.indexed;
    const cached = deviceIndexes.get(this.devices);
    this.indexed = cached && cached.size === this.devices.length ? cached : this.build();
    return this.indexed;
  }
  private set index(m: Map<string, number>) {
    this.indexed = m;
  }
  private build(): Map<string, number> {
    const m = new Map<string, number>();
    for (let i = 0; i < this.devices.length; i++) m.set(this.devices[i].id, i);
    deviceIndexes.set(this.devices, m);
    this.rebuilt = true;
    return m;
  }
  get(id: string): DeviceView | undefined {
    const i = this.index.get(id);
    const d = i === undefined ? undefined : this.devices[i];
    if (d?.id === id) return d;
    if (this.rebuilt) return undefined;
    this.index = this.build();
    return this.get(id);
  }
  has(id: string): boolean {
    return this.get(id) !== undefined;
  }
}
