// The reboot semaphore as the server runs it (FleetLock, issue 14): pre-reboot takes a slot, steady-state gives it
// back, an operator may release one, and a lease that runs out frees its slot (audited). The rules are pure
// (fleet-lock-rules.ts). A request is first decided on what is read outside any transaction: one that changes
// nothing (a repeated pre-reboot, a full group, steady-state of a node holding nothing) writes nothing, so
// unauthenticated clients cannot keep the write path busy. One that may change something runs in a transaction;
// on PostgreSQL the group row is locked `for update` first, so replicas take a group's slots one at a time and
// never both win the last.
import { appendAudit } from '../db/audit.ts';
import { type Db, inTransaction, type Store } from '../db/database.ts';
import {
  deleteExpiredLockHolders,
  deleteLockHolder,
  insertLockGroupIfAbsent,
  insertLockHolder,
  type LockGroup,
  type LockHolder,
  lockGroup,
  lockGroups,
  lockHolders,
  upsertLockGroup,
} from '../db/fleet-locks.ts';
import { notFound } from '../errors.ts';
import { acquire, type FleetLockRates, type Holder, isLive, release } from './fleet-lock-rules.ts';

/** Zincati's group when none is configured; it exists without `lock set`, with the configured defaults. */
export const DEFAULT_GROUP = 'default';
/** The audit actor of what FleetLock clients did (they send no credentials; the detail has their address). */
const CLIENT_ACTOR = 'fleetlock';

/** server.yaml `fleet_lock:` in the server's own terms (config.ts). */
export interface FleetLockOptions {
  /** Off (the default): the FleetLock endpoints answer 404 with a protocol error. */
  enabled: boolean;
  /** Slots and lease of the group "default" until `lock set default` changes them. */
  defaultSlots: number;
  defaultLeaseMs: number;
  /** Client addresses allowed (CIDRs); empty: any address. */
  allowFrom: string[];
  /** A header every request must carry with this exact value; undefined: none. */
  secretHeader?: { name: string; value: string };
  /** How often expired leases are swept (default 5 s). */
  sweepMs?: number;
  /** Request rates FleetLock answers (what is not given: DEFAULT_FLEET_LOCK_RATES). */
  rateLimit?: Partial<FleetLockRates>;
}

export const DEFAULT_FLEET_LOCK: FleetLockOptions = {
  enabled: false,
  defaultSlots: 1,
  defaultLeaseMs: 30 * 60_000,
  allowFrom: [],
};

export interface LockDeps {
  store: Store;
  clock: () => number;
  options: FleetLockOptions;
}

export type PreRebootResult = 'locked' | 'already-held' | 'full' | 'unknown-group';
export type SteadyStateResult = 'unlocked' | 'not-held' | 'unknown-group';

const toHolder = (h: LockHolder): Holder => ({
  id: h.holder_id,
  acquiredAt: h.acquired_at,
  expiresAt: h.expires_at,
});
const subject = (group: string, id: string) => `fleetlock/${group}/${id}`;

/** The group (created on first use when it is "default"), its row locked on PostgreSQL; undefined: unknown. */
async function groupForUpdate(
  deps: LockDeps,
  tx: Db,
  name: string,
  now: number,
): Promise<LockGroup | undefined> {
  const forUpdate = deps.store.dialect === 'postgres';
  const g = await lockGroup(tx, name, forUpdate);
  if (g || name !== DEFAULT_GROUP) return g;
  await insertLockGroupIfAbsent(tx, {
    name,
    slots: deps.options.defaultSlots,
    lease_ms: deps.options.defaultLeaseMs,
    updated_at: now,
    updated_by: 'server.yaml',
  });
  return lockGroup(tx, name, forUpdate);
}

/** The group and its holders as read now, outside any transaction (a decision that writes nothing). */
async function seen(deps: LockDeps, name: string): Promise<{ group?: LockGroup; holders: Holder[] }> {
  const group = await lockGroup(deps.store.db, name, false);
  if (!group) return { holders: [] };
  return { group, holders: (await lockHolders(deps.store.db, name)).map(toHolder) };
}

async function auditExpired(tx: Db, group: string, expired: Holder[], now: number): Promise<void> {
  for (const h of expired)
    if (await deleteLockHolder(tx, group, h.id))
      await appendAudit(tx, {
        at: now,
        actor: 'server',
        action: 'fleetlock.lease-expired',
        subject: subject(group, h.id),
        detail: { group, id: h.id, held_for_ms: now - h.acquiredAt, lease_ms: h.expiresAt - h.acquiredAt },
      });
}

/** FleetLock pre-reboot: take a slot for `id` in `group` (idempotent for a holder). `from`: the client address. */
export async function preReboot(
  deps: LockDeps,
  group: string,
  id: string,
  from: string,
): Promise<PreRebootResult> {
  // An answer that changes nothing needs no transaction; refusing on a moment-old read is safe (clients ask again).
  const before = await seen(deps, group);
  if (!before.group && group !== DEFAULT_GROUP) return 'unknown-group';
  if (before.group) {
    const g = before.group;
    const out = acquire({ slots: g.slots, leaseMs: g.lease_ms, holders: before.holders }, id, deps.clock());
    if (out.expired.length === 0 && !out.ok) return 'full';
    if (out.expired.length === 0 && out.ok && !out.added) return 'already-held';
  }
  return inTransaction(deps.store, async (tx) => {
    const now = deps.clock();
    const g = await groupForUpdate(deps, tx, group, now);
    if (!g) return 'unknown-group';
    const holders = (await lockHolders(tx, group)).map(toHolder);
    const out = acquire({ slots: g.slots, leaseMs: g.lease_ms, holders }, id, now);
    await auditExpired(tx, group, out.expired, now);
    if (!out.ok) return 'full';
    if (!out.added) return 'already-held';
    const h = out.added;
    await insertLockHolder(tx, {
      group_name: group,
      holder_id: id,
      acquired_at: h.acquiredAt,
      expires_at: h.expiresAt,
    });
    await appendAudit(tx, {
      at: now,
      actor: CLIENT_ACTOR,
      action: 'fleetlock.locked',
      subject: subject(group, id),
      detail: { group, id, from, lease_ms: g.lease_ms },
    });
    return 'locked';
  });
}

/** FleetLock steady-state: give back `id`'s slot if it holds one. */
export async function steadyState(
  deps: LockDeps,
  group: string,
  id: string,
  from: string,
): Promise<SteadyStateResult> {
  // Zincati sends this on every start: for a node holding nothing, answer from a read. "default" is not created
  // for it (nobody holds a slot in a group that does not exist yet); expired holders are left to the sweep.
  const before = await seen(deps, group);
  if (!before.group) return group === DEFAULT_GROUP ? 'not-held' : 'unknown-group';
  if (!release(before.holders, id, deps.clock()).released) return 'not-held';
  return inTransaction(deps.store, async (tx) => {
    const now = deps.clock();
    const g = await groupForUpdate(deps, tx, group, now);
    if (!g) return 'unknown-group';
    const out = release((await lockHolders(tx, group)).map(toHolder), id, now);
    await auditExpired(tx, group, out.expired, now);
    if (!out.released || !(await deleteLockHolder(tx, group, id))) return 'not-held';
    await appendAudit(tx, {
      at: now,
      actor: CLIENT_ACTOR,
      action: 'fleetlock.unlocked',
      subject: subject(group, id),
      detail: { group, id, from, held_for_ms: now - out.released.acquiredAt },
    });
    return 'unlocked';
  });
}

/** An operator frees `id`'s slot (a node that died while holding it); 404 when it holds none. */
export async function releaseHolder(
  deps: LockDeps,
  actor: string,
  group: string,
  id: string,
  reason: string | undefined,
): Promise<void> {
  await inTransaction(deps.store, async (tx) => {
    const now = deps.clock();
    const g = await lockGroup(tx, group, deps.store.dialect === 'postgres');
    if (!g) throw notFound(`no lock group "${group}"`);
    const out = release((await lockHolders(tx, group)).map(toHolder), id, now);
    await auditExpired(tx, group, out.expired, now);
    if (!out.released || !(await deleteLockHolder(tx, group, id)))
      throw notFound(`"${id}" holds no slot in lock group "${group}"`);
    await appendAudit(tx, {
      at: now,
      actor,
      action: 'fleetlock.released',
      subject: subject(group, id),
      detail: { group, id, held_for_ms: now - out.released.acquiredAt, ...(reason ? { reason } : {}) },
    });
  });
}

/** Creates or changes a group's slots and lease (holders keep the lease they were given). */
export async function setGroup(
  deps: LockDeps,
  actor: string,
  name: string,
  slots: number,
  leaseMs: number,
): Promise<void> {
  await inTransaction(deps.store, async (tx) => {
    const now = deps.clock();
    const before = await lockGroup(tx, name, deps.store.dialect === 'postgres');
    await upsertLockGroup(tx, { name, slots, lease_ms: leaseMs, updated_at: now, updated_by: actor });
    await appendAudit(tx, {
      at: now,
      actor,
      action: 'fleetlock.group-set',
      subject: `fleetlock/${name}`,
      detail: {
        group: name,
        slots,
        lease_ms: leaseMs,
        ...(before ? { before: { slots: before.slots, lease_ms: before.lease_ms } } : {}),
      },
    });
  });
}

/** One group as `lock list` shows it: only holders whose lease still runs. */
export interface LockGroupView {
  name: string;
  slots: number;
  lease_ms: number;
  updated_at: number | null;
  updated_by: string | null;
  holders: Array<{ id: string; acquired_at: number; expires_at: number }>;
}

/**
 * Every group with its live holders. A holder whose lease ended is never shown, even before the sweep deleted it.
 * The group "default" is shown with the configured defaults before its first use.
 */
export async function listLocks(deps: LockDeps): Promise<{ now: number; groups: LockGroupView[] }> {
  const now = deps.clock();
  const [groups, holders] = await Promise.all([lockGroups(deps.store.db), lockHolders(deps.store.db)]);
  const views: LockGroupView[] = groups.map((g) => ({ ...g, holders: [] }));
  if (!groups.some((g) => g.name === DEFAULT_GROUP))
    views.unshift({
      name: DEFAULT_GROUP,
      slots: deps.options.defaultSlots,
      lease_ms: deps.options.defaultLeaseMs,
      updated_at: null,
      updated_by: null,
      holders: [],
    });
  const byName = new Map(views.map((v) => [v.name, v]));
  for (const h of holders)
    if (isLive(toHolder(h), now))
      byName
        .get(h.group_name)
        ?.holders.push({ id: h.holder_id, acquired_at: h.acquired_at, expires_at: h.expires_at });
  return { now, groups: views };
}

/** Frees every slot whose lease ended, each audited once (also across replicas); returns how many. */
export async function sweepExpiredLeases(deps: LockDeps): Promise<number> {
  return inTransaction(deps.store, async (tx) => {
    const now = deps.clock();
    const gone = await deleteExpiredLockHolders(tx, now);
    for (const h of gone)
      await appendAudit(tx, {
        at: now,
        actor: 'server',
        action: 'fleetlock.lease-expired',
        subject: subject(h.group_name, h.holder_id),
        detail: {
          group: h.group_name,
          id: h.holder_id,
          held_for_ms: now - h.acquired_at,
          lease_ms: h.expires_at - h.acquired_at,
        },
      });
    return gone.length;
  });
}

/**
 * Sweeps expired leases every `options.sweepMs` until the returned stop is called (stop waits for a sweep under
 * way). A failed sweep is logged and tried again at the next tick.
 */
export function startLeaseSweep(
  deps: LockDeps,
  log: { warn(o: object, msg: string): void },
): () => Promise<void> {
  let running: Promise<unknown> | null = null;
  const timer = setInterval(() => {
    // A slow sweep is not overtaken by the next one (they would only find the same rows).
    if (running) return;
    running = sweepExpiredLeases(deps)
      .catch((err) => log.warn({ err }, 'fleet lock lease sweep failed'))
      .finally(() => {
        running = null;
      });
  }, deps.options.sweepMs ?? 5000);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await running;
  };
}
