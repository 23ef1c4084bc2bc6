import type { DeviceView } from './rollout-state.ts';

/**
 * Device lookup by id. The id → position index is memoised per fleet array, so a caller that reuses its
 * array (the simulator) does not pay for a million-entry map on every step; entries are read live from
 * the array and checked, so replacing or reordering elements is detected and the index rebuilt.
 */
const deviceIndexes = new WeakMap<readonly DeviceView[], Map<string, number>>();

/**
 * Thrown by a step given only part of the fleet (StepInput.partial) when it needs a device it was not given, or
 * the whole fleet (a wave starts). The caller runs the step again with every device; the result is the same as
 * if it had from the start, because a partial step that does not throw saw only devices it was given.
 */
export class FleetNeeded extends Error {
  constructor(why: string) {
    super(`the step needs the whole fleet: ${why}`);
    this.name = 'FleetNeeded';
  }
}

export class DeviceLookup {
  private indexed: Map<string, number> | null = null;
  private rebuilt = false;
  /** `partial`: `devices` is a subset of the fleet; a miss throws FleetNeeded instead of answering undefined. */
  constructor(
    private readonly devices: readonly DeviceView[],
    private readonly partial = false,
  ) {}
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
    if (this.rebuilt) {
      if (this.partial) throw new FleetNeeded(`device ${id} was not loaded`);
      return undefined;
    }
    this.index = this.build();
    return this.get(id);
  }
  has(id: string): boolean {
    return this.get(id) !== undefined;
  }
}
