// Wake-ups between server replicas on one PostgreSQL: a notification is delivered to this process's waits at once
// and sent with NOTIFY to the others, so a device holding its wait on any replica hears of a change made on any
// other. Lost notifications are harmless in one direction only (a device then learns at its next check-in), so
// after a lost listening connection every wait held here is woken: spurious wake-ups cost one check-in each.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Db } from '../db/database.ts';
import { type Listener, listen, MAX_NOTIFY_BYTES, publish } from '../db/notify.ts';
import type { WakeBus, WakeTargets } from './bus.ts';

const CHANNEL = 'ringfence_wake';
/** Above this many devices one notification says "everyone" instead of listing them (a wave of a large fleet). */
const MAX_LISTED = 4000;
/** A device id as the server issues it; anything else in a payload is dropped. */
const DEVICE_ID_RE = /^[\x21-\x7e]{1,128}$/;

/** Payloads of at most MAX_NOTIFY_BYTES: `{"f": sender, "d": [ids]}`, or `{"f": sender, "all": true}`. */
export function wakePayloads(sender: string, ids: readonly string[]): string[] {
  if (ids.length > MAX_LISTED) return [JSON.stringify({ f: sender, all: true })];
  const out: string[] = [];
  let chunk: string[] = [];
  let bytes = 0;
  const base = JSON.stringify({ f: sender, d: [] }).length;
  for (const id of ids) {
    const cost = JSON.stringify(id).length + 1;
    if (chunk.length > 0 && base + bytes + cost > MAX_NOTIFY_BYTES) {
      out.push(JSON.stringify({ f: sender, d: chunk }));
      chunk = [];
      bytes = 0;
    }
    chunk.push(id);
    bytes += cost;
  }
  if (chunk.length > 0) out.push(JSON.stringify({ f: sender, d: chunk }));
  return out;
}

/** A payload read back: whom to wake, or null when it is not ours to act on (own echo, or malformed). */
export function readWakePayload(self: string, payload: string): WakeTargets | null {
  let v: unknown;
  try {
    v = JSON.parse(payload);
  } catch {
    return null;
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) return null;
  const m = v as { f?: unknown; d?: unknown; all?: unknown };
  if (typeof m.f !== 'string' || m.f === self) return null;
  if (m.all === true) return 'all';
  if (!Array.isArray(m.d)) return null;
  return m.d.filter((id): id is string => typeof id === 'string' && DEVICE_ID_RE.test(id));
}

export class PgWakeBus implements WakeBus {
  /** Tells this process's own notifications apart when they come back over LISTEN. */
  private readonly self = randomUUID();
  private readonly listeners: Array<(targets: WakeTargets) => void> = [];
  private listener: Listener | null = null;

  private constructor(
    private readonly db: Db,
    private readonly log: Logger,
  ) {}

  /** Connects the listening session; resolves once LISTEN is in place. */
  static async open(db: Db, url: string, log: Logger): Promise<PgWakeBus> {
    const bus = new PgWakeBus(db, log);
    bus.listener = listen(url, CHANNEL, {
      message: (payload) => {
        const targets = readWakePayload(bus.self, payload);
        if (targets !== null) bus.deliver(targets);
      },
      gap: () => {
        log.warn('wake-up listener reconnected; waking every held wait (notifications may have been missed)');
        bus.deliver('all');
      },
      error: (err) => log.warn({ err: err.message }, 'wake-up listener lost its database connection'),
    });
    try {
      await bus.listener.ready;
    } catch (e) {
      await bus.listener.close();
      throw new Error(`cannot listen for wake-ups on PostgreSQL: ${(e as Error).message}`);
    }
    return bus;
  }

  notify(deviceIds: Iterable<string>): void {
    const ids = [...new Set(deviceIds)];
    if (ids.length === 0) return;
    this.deliver(ids);
    // Fire and forget: the change is committed already, and a lost notification delays a device only until its
    // next check-in.
    for (const p of wakePayloads(this.self, ids))
      publish(this.db, CHANNEL, p).catch((err) =>
        this.log.warn({ err: (err as Error).message }, 'could not send a wake-up to other replicas'),
      );
  }

  onNotify(fn: (targets: WakeTargets) => void): void {
    this.listeners.push(fn);
  }

  async close(): Promise<void> {
    this.listeners.length = 0;
    await this.listener?.close();
  }

  private deliver(targets: WakeTargets): void {
    for (const fn of this.listeners) fn(targets);
  }
}
