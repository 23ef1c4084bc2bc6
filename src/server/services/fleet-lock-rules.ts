// The reboot semaphore's rules over plain data (FleetLock, issue 14): who may take a slot, who holds one, whose
// lease ran out. No I/O and no clock of its own (`now` is passed in), so the property tests can drive it through
// any history; services/fleet-lock.ts applies the outcomes in one transaction. Also who may ask at all and how
// often: the address allow-list and the request rates (server.yaml fleet_lock), read by config.ts and enforced by
// routes/fleetlock.ts.
import { BlockList, isIP } from 'node:net';

/** One node holding a reboot slot. */
export interface Holder {
  id: string;
  acquiredAt: number;
  /** The instant the lease ends; from then on the holder has lost its slot. */
  expiresAt: number;
}

/** A group's semaphore as stored. */
export interface Semaphore {
  slots: number;
  leaseMs: number;
  holders: readonly Holder[];
}

/** True while the holder's lease runs (it ends exactly at expiresAt). */
export const isLive = (h: Holder, now: number): boolean => h.expiresAt > now;

/** Splits holders into those whose lease still runs and those that lost their slot at `now`. */
export function expire(holders: readonly Holder[], now: number): { live: Holder[]; expired: Holder[] } {
  const live: Holder[] = [];
  const expired: Holder[] = [];
  for (const h of holders) (isLive(h, now) ? live : expired).push(h);
  return { live, expired };
}

export type AcquireOutcome =
  /** `added`: the new holder to store; undefined when `id` already held a slot (pre-reboot is idempotent). */
  | { ok: true; added: Holder | undefined; holder: Holder; expired: Holder[] }
  | { ok: false; reason: 'full'; expired: Holder[] };

/**
 * Tries to take a slot for `id`. Expired holders are freed first (they are returned to be deleted and audited).
 * A node that already holds a slot keeps it unchanged: repeating pre-reboot neither takes a second slot nor
 * extends the lease (else a node could hold a slot forever by asking again). When the slots were lowered below
 * the current holders, nobody new gets in until enough have left.
 */
export function acquire(sem: Semaphore, id: string, now: number): AcquireOutcome {
  const { live, expired } = expire(sem.holders, now);
  const mine = live.find((h) => h.id === id);
  if (mine) return { ok: true, added: undefined, holder: mine, expired };
  if (live.length >= sem.slots) return { ok: false, reason: 'full', expired };
  const holder = { id, acquiredAt: now, expiresAt: now + sem.leaseMs };
  return { ok: true, added: holder, holder, expired };
}

/**
 * Releases `id`'s slot (steady-state, or an operator). Releasing a slot one does not hold is not an error: the
 * protocol's unlock is "unlock if held", which Zincati calls on every start.
 */
export function release(
  holders: readonly Holder[],
  id: string,
  now: number,
): { released: Holder | undefined; expired: Holder[] } {
  const { live, expired } = expire(holders, now);
  return { released: live.find((h) => h.id === id), expired };
}

/**
 * Requests a minute, each also the burst (token buckets, per server process). Every request counts against its
 * address; a well-formed one also against its node id; a refused one (address, secret, header, body, unknown
 * group) also against the address's failures, which are FleetLock's own: they never lock out device or admin logins.
 */
export interface FleetLockRates {
  perAddressPerMinute: number;
  perIdPerMinute: number;
  failuresPerAddressPerMinute: number;
}

/** Zincati asks about once per 5 minutes per node and backs off on errors; these leave ample room. */
export const DEFAULT_FLEET_LOCK_RATES: FleetLockRates = {
  perAddressPerMinute: 30,
  perIdPerMinute: 6,
  failuresPerAddressPerMinute: 10,
};

/** An allow-list of CIDRs (or single addresses); throws a one-line error on a malformed entry. */
export function addressList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const entry of cidrs) {
    const [addr, bits, extra] = entry.split('/');
    const family = isIP(addr);
    const max = family === 6 ? 128 : 32;
    const prefix = bits === undefined ? max : Number(bits);
    if (!family || extra !== undefined || !/^\d{1,3}$/.test(bits ?? `${max}`) || prefix > max)
      throw new Error(`invalid address or CIDR "${entry}" (e.g. 10.0.0.0/8, 192.168.1.7, fd00::/8)`);
    list.addSubnet(addr, prefix, family === 6 ? 'ipv6' : 'ipv4');
  }
  return list;
}
