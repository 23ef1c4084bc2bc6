// The waits held by this process, by device: at most one per device, at most `maxHeld` in all, each ended by a
// notification for its device, by its hold running out, by a newer wait of the same device, or by shutdown.
import type { WakeBus } from './bus.ts';

/** How a held wait ended: `true` means "check in now". */
export type WaitEnd = boolean;

interface Waiter {
  finish: (changed: WaitEnd) => void;
}

/** A registered wait: `done` settles once; `finish` ends it early (idempotent). */
export interface HeldWait {
  done: Promise<WaitEnd>;
  finish(changed: WaitEnd): void;
}

export class WakeHub {
  private readonly waiters = new Map<string, Waiter>();
  private closing = false;

  constructor(
    bus: WakeBus,
    private readonly maxHeld: number,
    private readonly onCount: (held: number) => void = () => {},
  ) {
    bus.onNotify((targets) => {
      if (targets === 'all') for (const w of [...this.waiters.values()]) w.finish(true);
      else for (const id of targets) this.waiters.get(id)?.finish(true);
    });
  }

  /** Waits held now. */
  get held(): number {
    return this.waiters.size;
  }

  /**
   * Registers a wait for `deviceId` lasting at most `holdMs`; null when the process holds its maximum (or is
   * closing). A wait the device already held ends with `false` (one held wait per device).
   */
  hold(deviceId: string, holdMs: number): HeldWait | null {
    this.waiters.get(deviceId)?.finish(false);
    if (this.closing || this.waiters.size >= this.maxHeld) return null;
    let settle!: (v: WaitEnd) => void;
    const done = new Promise<WaitEnd>((r) => {
      settle = r;
    });
    let open = true;
    const waiter: Waiter = {
      finish: (changed) => {
        if (!open) return;
        open = false;
        clearTimeout(timer);
        if (this.waiters.get(deviceId) === waiter) this.waiters.delete(deviceId);
        this.onCount(this.waiters.size);
        settle(changed);
      },
    };
    const timer = setTimeout(() => waiter.finish(false), holdMs);
    timer.unref();
    this.waiters.set(deviceId, waiter);
    this.onCount(this.waiters.size);
    return { done, finish: waiter.finish };
  }

  /** Ends every held wait with `false` and refuses new ones: shutdown stays fast. */
  close(): void {
    this.closing = true;
    for (const w of [...this.waiters.values()]) w.finish(false);
  }
}
