// Carries "this device's desired answer may have changed" to whoever holds its wait: within one process
// (LocalWakeBus, the SQLite default), or between replicas on one PostgreSQL (pg-bus.ts, LISTEN/NOTIFY).

/** Whom a notification wakes: listed devices, or every wait held (after notifications may have been lost). */
export type WakeTargets = readonly string[] | 'all';

/** Notifications about devices whose desired answer may have changed (spurious ones are harmless). */
export interface WakeBus {
  /** Announces devices; call only after the transaction that changed them committed. */
  notify(deviceIds: Iterable<string>): void;
  /** Calls `fn` with every announced batch (from this process, and from other replicas when the bus carries them). */
  onNotify(fn: (targets: WakeTargets) => void): void;
  /** Stops delivering (a bus with a connection closes it). */
  close(): Promise<void>;
}

/** The bus of one server process: notifications are delivered synchronously to the listeners. */
export class LocalWakeBus implements WakeBus {
  private readonly listeners: Array<(targets: WakeTargets) => void> = [];

  notify(deviceIds: Iterable<string>): void {
    const ids = [...new Set(deviceIds)];
    if (ids.length === 0) return;
    for (const fn of this.listeners) fn(ids);
  }

  onNotify(fn: (targets: WakeTargets) => void): void {
    this.listeners.push(fn);
  }

  async close(): Promise<void> {
    this.listeners.length = 0;
  }
}
