// Wake-ups on the device: between check-ins the agent holds the server's wait route (POST /v1/wait) and checks
// in as soon as it answers that something changed. Pull stays the rule: anything unexpected (a server without
// the route, a proxy that cuts idle connections, an error) falls back to sleeping until the next check-in.
import type { Logger } from 'pino';
import { discard, json, request } from '../net/http.ts';

/** A wait answer is `{"changed":true}`: anything past this size is not one. */
const MAX_WAIT_ANSWER_BYTES = 1024;
/** A held wait times out this long after the hold it asked for (the server answers at the hold's end). */
const WAIT_GRACE_MS = 10_000;
/** The longest hold the agent asks for, whatever the server says. */
const MAX_HOLD_SECONDS = 300;
/** Answers with nothing new that come back before half their hold: this many and the agent stops waiting. */
const MAX_EARLY_ANSWERS = 2;
const TAG_RE = /^[0-9a-f]{1,64}$/;
/** A path on the check-in's server: never `//…`, which URL resolution reads as another host (token and all). */
const PATH_RE = /^\/(?!\/)[A-Za-z0-9/_-]{0,200}$/;

/** What a check-in answer offers for wake-ups, checked field by field. */
export interface WakeOffer {
  server: string;
  token: string;
  path: string;
  maxSeconds: number;
  tag: string;
}

/** The wake-up offer of a check-in answer, or null when the server offers none (older servers) or it is malformed. */
export function wakeOffer(body: Record<string, unknown>, server: string, token: string): WakeOffer | null {
  const w = body.wake as { path?: unknown; max_seconds?: unknown } | undefined;
  const tag = body.desired_tag;
  if (!w || typeof w !== 'object' || typeof tag !== 'string' || !TAG_RE.test(tag)) return null;
  if (typeof w.path !== 'string' || !PATH_RE.test(w.path)) return null;
  if (typeof w.max_seconds !== 'number' || !Number.isFinite(w.max_seconds) || w.max_seconds < 1) return null;
  return {
    server,
    token,
    path: w.path,
    maxSeconds: Math.min(MAX_HOLD_SECONDS, Math.floor(w.max_seconds)),
    tag,
  };
}

/**
 * How holding ended: the server has something new, the time is up, the wait was cut by the network (the replica
 * holding it died, a proxy dropped it: check in again soon, another replica may answer), or waiting does not
 * work here (sleep instead).
 */
export type WaitOutcome = 'changed' | 'elapsed' | 'lost' | 'fallback';

/** Holds waits, one after the other, until one answers changed, `deadline` (epoch ms) passes, or one fails. */
export async function holdWaits(
  o: WakeOffer,
  deadline: number,
  signal: AbortSignal,
  log: Logger,
): Promise<WaitOutcome> {
  let early = 0;
  while (!signal.aborted) {
    const seconds = Math.min(o.maxSeconds, Math.floor((deadline - Date.now()) / 1000));
    if (seconds < 1) return 'elapsed';
    const started = Date.now();
    let body: Record<string, unknown>;
    try {
      const res = await request(new URL(o.path, o.server), {
        method: 'POST',
        timeoutMs: seconds * 1000 + WAIT_GRACE_MS,
        signal,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${o.token}` },
        body: JSON.stringify({ tag: o.tag, seconds }),
      });
      if (res.status !== 200) {
        discard(res);
        log.info({ status: res.status }, 'wake-up wait refused; polling until the next check-in');
        return 'fallback';
      }
      const v = await json<unknown>(res, MAX_WAIT_ANSWER_BYTES);
      body = v && typeof v === 'object' ? (v as Record<string, unknown>) : {};
    } catch (e) {
      if (signal.aborted) return 'elapsed';
      log.info({ err: (e as Error).message }, 'wake-up wait cut by the network; checking in again');
      return 'lost';
    }
    if (body.changed === true) return 'changed';
    // Ended early with nothing new (another wait of ours replaced it, or a server cutting holds short): a few
    // are normal, a steady stream would be a loop.
    if (Date.now() - started < seconds * 500 && ++early >= MAX_EARLY_ANSWERS) return 'fallback';
  }
  return 'elapsed';
}
