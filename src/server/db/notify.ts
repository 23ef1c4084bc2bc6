// PostgreSQL LISTEN/NOTIFY: how server replicas on one database tell each other that something changed (wake-ups).
// Sending goes through the query layer; listening needs a connection of its own that stays open, so it is a
// plain `pg` client here, reconnected with backoff when the database goes away.
import { sql } from 'kysely';
import type pg from 'pg';
import type { Db } from './database.ts';

/** PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; senders keep below this. */
export const MAX_NOTIFY_BYTES = 7900;
/** Reconnection backoff of a listener: from 100 ms, doubling, at most this. */
const MAX_RECONNECT_MS = 5000;
const CHANNEL_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/** Sends `payload` on `channel` to every session listening, on any replica (autocommit: delivered at once). */
export async function publish(db: Db, channel: string, payload: string): Promise<void> {
  await sql`select pg_notify(${channel}, ${payload})`.execute(db);
}

export interface ListenerEvents {
  /** A notification's payload (unchecked: the caller validates it). */
  message(payload: string): void;
  /** Listening resumed after a lost connection: notifications sent meanwhile were missed. */
  gap(): void;
  error(err: Error): void;
}

export interface Listener {
  /** Settles once the first LISTEN is in place (rejects when the first connection fails). */
  ready: Promise<void>;
  close(): Promise<void>;
}

/** Listens on `channel` over a connection of its own to `url`, reconnecting after a lost connection. */
export function listen(url: string, channel: string, on: ListenerEvents): Listener {
  if (!CHANNEL_RE.test(channel)) throw new Error(`invalid notification channel "${channel}"`);
  let closed = false;
  let client: pg.Client | null = null;
  let retryMs = 100;
  let timer: NodeJS.Timeout | null = null;
  let connected = false;

  const again = () => {
    if (closed || timer) return;
    timer = setTimeout(() => {
      timer = null;
      void connect().catch(() => {});
    }, retryMs);
    timer.unref();
    retryMs = Math.min(MAX_RECONNECT_MS, retryMs * 2);
  };

  const connect = async (): Promise<void> => {
    // Loaded here, not at the top: a server on SQLite never needs the PostgreSQL driver (start-up time).
    const { Client } = (await import('pg')).default;
    const c = new Client({ connectionString: url });
    let dropped = false;
    const drop = (err?: Error) => {
      if (dropped) return;
      dropped = true;
      if (err) on.error(err);
      if (client === c) client = null;
      c.end().catch(() => {});
      again();
    };
    c.on('notification', (m) => {
      if (m.channel === channel && typeof m.payload === 'string') on.message(m.payload);
    });
    c.on('error', (err) => drop(err));
    c.on('end', () => drop());
    try {
      await c.connect();
      await c.query(`LISTEN ${channel}`); // a checked identifier, not user input
    } catch (e) {
      drop(e as Error);
      throw e;
    }
    if (closed) {
      await c.end().catch(() => {});
      return;
    }
    client = c;
    retryMs = 100;
    if (connected) on.gap();
    connected = true;
  };

  return {
    ready: connect(),
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      timer = null;
      const c = client;
      client = null;
      await c?.end().catch(() => {});
    },
  };
}
