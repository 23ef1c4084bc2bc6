// The FleetLock protocol's client side (the semaphore Zincati/Airlock speak): POST /v1/pre-reboot takes a slot,
// POST /v1/steady-state gives it back, both idempotent for the same node id. Decisions are in fleet-lock.ts.
import { readFileSync } from 'node:fs';
import { json, request } from '../net/http.ts';
import type { AgentConfig } from './config.ts';
import { show } from './offer.ts';

/** A FleetLock exchange times out after this long: a stalled lock server stalls no check-in. */
const EXCHANGE_MS = 30_000;
/** Answers are small JSON objects; anything bigger is read no further. */
const MAX_ANSWER_BYTES = 64 * 1024;

export type LockAnswer = { ok: true } | { ok: false; reason: string };

export class FleetLockClient {
  constructor(private readonly cfg: AgentConfig) {}

  /** The FleetLock base: `fleet_lock.url`, else the agent's server (its /fleetlock/ endpoints). */
  private base(): string {
    const url = this.cfg.fleet_lock.url ?? (this.cfg.server && new URL('/fleetlock/', this.cfg.server).href);
    if (!url) throw new Error('no FleetLock server: set server: or fleet_lock.url');
    return url.endsWith('/') ? url : `${url}/`;
  }

  /** Asks for a slot of `group` for node `id`. */
  preReboot(id: string, group: string): Promise<LockAnswer> {
    return this.post('v1/pre-reboot', id, group);
  }

  /** Gives the slot back (200 also when it was not held). */
  steadyState(id: string, group: string): Promise<LockAnswer> {
    return this.post('v1/steady-state', id, group);
  }

  private async post(path: string, id: string, group: string): Promise<LockAnswer> {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'fleet-lock-protocol': 'true',
    };
    const secret = this.cfg.fleet_lock.secret_header;
    if (secret) {
      // Read at each use: a rotated secret takes effect without restarting the agent.
      let value: string;
      try {
        value = readFileSync(secret.value_file, 'utf8').trim();
      } catch (e) {
        return { ok: false, reason: `cannot read fleet_lock secret: ${(e as Error).message}` };
      }
      headers[secret.name.toLowerCase()] = value;
    }
    try {
      const res = await request(new URL(path, this.base()), {
        method: 'POST',
        timeoutMs: EXCHANGE_MS,
        headers,
        body: JSON.stringify({ client_params: { id, group } }),
      });
      const body = await json<unknown>(res, MAX_ANSWER_BYTES).catch(() => ({}));
      if (res.status === 200) return { ok: true };
      const b = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>;
      const why = [b.kind, b.value ?? b.message].filter((x) => x !== undefined).map((x) => show(x, 200));
      return { ok: false, reason: `HTTP ${res.status}${why.length ? ` ${why.join(': ')}` : ''}` };
    } catch (e) {
      return { ok: false, reason: `unreachable: ${show((e as Error).message, 200)}` };
    }
  }
}
