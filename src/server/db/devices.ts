// Table `devices`: enrolled devices, with the operator's controls (hold, pins, channel, deferral) that always
// win over rollouts. One row mapper (`toDevice`) and the device queries the check-in and fleet code share.
import type { Generated, Selectable } from 'kysely';
import type { Labels } from '../../protocol/device.ts';
import type { Db } from './database.ts';
import type { DeviceComponentRow } from './device-components.ts';
import { inChunks } from './in-chunks.ts';
import { decode, encode, type Json } from './json.ts';
import type { Channel as RolloutChannel } from './rollouts.ts';
import { padIn, runShaped } from './shaped.ts';

/** `early` gets a release first; `general` only once it was promoted (the rollouts' channels). */
export type Channel = RolloutChannel;
/** Operator pins: component → version. */
export type Pins = Record<string, string>;

export interface DeviceTable {
  id: string;
  name: string;
  token_hash: string;
  labels: Json<Labels>; // the effective labels (the device's own, overridden by its enrollment labels)
  agent_version: string;
  enrolled_at: number;
  last_seen_at: number;
  held: 0 | 1; // operator hold, wins over every rollout
  pins: Json<Pins>;
  channel: Generated<Channel>;
  deferred_until: number | null; // nothing is offered before this instant
  enroll_labels: Generated<Json<Labels>>; // labels from the enrollment token: they win over the device's own
  retired_at: number | null; // retired: token revoked, out of every rollout
}

export type DeviceRow = Selectable<DeviceTable>;

/** A device as the server's code uses it. */
export interface Device {
  id: string;
  name: string;
  tokenHash: string;
  labels: Labels;
  enrollLabels: Labels;
  agentVersion: string;
  enrolledAt: number;
  lastSeenAt: number;
  held: boolean;
  pins: Pins;
  channel: Channel;
  deferredUntil: number | null;
  retiredAt: number | null;
}

/** Maps a `devices` row to a Device. */
export function toDevice(r: DeviceRow): Device {
  return {
    id: r.id,
    name: r.name,
    tokenHash: r.token_hash,
    labels: decode(r.labels),
    enrollLabels: decode(r.enroll_labels),
    agentVersion: r.agent_version,
    enrolledAt: r.enrolled_at,
    lastSeenAt: r.last_seen_at,
    held: r.held === 1,
    pins: decode(r.pins),
    channel: r.channel,
    deferredUntil: r.deferred_until,
    retiredAt: r.retired_at,
  };
}

/** The operator's per-device controls, as set by selector (fleet hold, pin, channel, defer). */
export interface FleetControls {
  held: boolean;
  pins: Pins;
  channel: Channel;
  deferredUntil: number | null;
}

/** Live (not retired) devices, by name. */
export async function liveDevices(db: Db): Promise<Device[]> {
  const rows = await db
    .selectFrom('devices')
    .selectAll()
    .where('retired_at', 'is', null)
    .orderBy('name')
    .execute();
  return rows.map(toDevice);
}

/**
 * The labels of live devices (of `scope.channel`, running `scope.component`; every live device with `null`), in
 * the table's order: what a plan is measured against. Only the labels column is read, and each distinct label
 * set is decoded once (a million devices share a few hundred sets): a whole-fleet check costs one lean scan.
 */
export async function liveLabelSets(
  db: Db,
  scope: { component: string; channel: Channel | null } | null,
): Promise<Labels[]> {
  let q = db.selectFrom('devices').select('devices.labels').where('devices.retired_at', 'is', null);
  if (scope) {
    if (scope.channel) q = q.where('devices.channel', '=', scope.channel);
    q = q.where((eb) =>
      eb.exists(
        eb
          .selectFrom('device_components')
          .select('device_components.device_id')
          .whereRef('device_components.device_id', '=', 'devices.id')
          .where('device_components.component', '=', scope.component),
      ),
    );
  }
  const rows = await q.execute();
  const sets = new Map<string, Labels>();
  const out: Labels[] = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const raw = rows[i].labels;
    let labels = sets.get(raw);
    if (!labels) {
      labels = Object.freeze(decode(raw));
      sets.set(raw, labels);
    }
    out[i] = labels;
  }
  return out;
}

/** What a rollout step reads of a live device (see services/rollout-fleet.ts). */
export interface StepDevice {
  id: string;
  labels: Labels;
  held: boolean;
  pins: Pins;
  deferredUntil: number | null;
  lastSeenAt: number;
}

const NO_PINS = '{}';

/**
 * Live devices of a channel (all with `null`) with only what a rollout step reads. A step reads the whole fleet:
 * at a million devices decoding each row's JSON dominated it, so identical label sets (most of a fleet) are
 * decoded once and shared, and empty pins are not decoded at all. The shared objects are frozen.
 */
export async function stepDevicesOfChannel(
  db: Db,
  channel: Channel | null,
  ids?: readonly string[],
): Promise<StepDevice[]> {
  const rows = await inChunks(ids, (chunk) => {
    let q = db
      .selectFrom('devices')
      .select(['id', 'labels', 'held', 'pins', 'deferred_until', 'last_seen_at'])
      .where('retired_at', 'is', null);
    if (channel) q = q.where('channel', '=', channel);
    if (chunk) q = q.where('id', 'in', chunk);
    return q.execute();
  });
  const labelSets = new Map<string, Labels>();
  const noPins: Pins = Object.freeze({});
  const out: StepDevice[] = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    let labels = labelSets.get(r.labels);
    if (!labels) {
      labels = Object.freeze(decode(r.labels));
      labelSets.set(r.labels, labels);
    }
    out[i] = {
      id: r.id,
      labels,
      held: r.held === 1,
      pins: r.pins === NO_PINS ? noPins : decode(r.pins),
      deferredUntil: r.deferred_until,
      lastSeenAt: r.last_seen_at,
    };
  }
  return out;
}

/** Devices whose id or name is `key`, retired ones included (their history is kept). */
export async function devicesByKey(db: Db, key: string): Promise<Device[]> {
  const rows = await db
    .selectFrom('devices')
    .selectAll()
    .where((eb) => eb.or([eb('id', '=', key), eb('name', '=', key)]))
    .execute();
  return rows.map(toDevice);
}

/** Live devices whose id or name is `key` (a name several devices share gives several). */
export async function liveDevicesByKey(db: Db, key: string): Promise<Device[]> {
  const rows = await db
    .selectFrom('devices')
    .selectAll()
    .where('retired_at', 'is', null)
    .where((eb) => eb.or([eb('id', '=', key), eb('name', '=', key)]))
    .orderBy('name')
    .execute();
  return rows.map(toDevice);
}

/** Live devices holding these token hashes (one set-based read per check-in batch). */
export async function liveDevicesByTokenHash(db: Db, hashes: string[]): Promise<Device[]> {
  if (hashes.length === 0) return [];
  const rows = await db
    .selectFrom('devices')
    .selectAll()
    .where('token_hash', 'in', hashes)
    .where('retired_at', 'is', null)
    .execute();
  return rows.map(toDevice);
}

/**
 * What a check-in reads of a device: labels and pins as their stored JSON text, so a check-in that changes
 * nothing neither decodes nor re-encodes them (decode where needed), and its stored components.
 */
export interface CheckinDevice {
  id: string;
  tokenHash: string;
  labels: Json<Labels>;
  enrollLabels: Json<Labels>;
  agentVersion: string;
  held: boolean;
  pins: Json<Pins>;
  components: StoredComponent[];
}

/** A stored component as a check-in compares it with what the device reports. */
export type StoredComponent = Omit<DeviceComponentRow, 'device_id' | 'updated_at'>;

/**
 * Live devices holding these token hashes, with their stored components and only the columns a check-in uses:
 * one set-based read per check-in batch (every value read is built per row, the larger part of this read's cost).
 */
export async function checkinDevicesByTokenHash(db: Db, hashes: string[]): Promise<CheckinDevice[]> {
  if (hashes.length === 0) return [];
  const padded = padIn(hashes);
  const rows = await runShaped(db, `checkinDevices:${padded.length}`, padded, () =>
    db
      .selectFrom('devices as d')
      .leftJoin('device_components as c', 'c.device_id', 'd.id')
      .select(['d.id', 'd.token_hash', 'd.labels', 'd.enroll_labels', 'd.agent_version', 'd.held', 'd.pins'])
      .select(['c.component', 'c.version', 'c.state', 'c.health', 'c.quarantined'])
      .where('d.token_hash', 'in', padded)
      .where('d.retired_at', 'is', null),
  );
  const byId = new Map<string, CheckinDevice>();
  for (const r of rows) {
    let dev = byId.get(r.id);
    if (!dev) {
      dev = {
        id: r.id,
        tokenHash: r.token_hash,
        labels: r.labels,
        enrollLabels: r.enroll_labels,
        agentVersion: r.agent_version,
        held: r.held === 1,
        pins: r.pins,
        components: [],
      };
      byId.set(r.id, dev);
    }
    // A device without components comes back once, with nulls (the left join).
    if (r.component !== null && r.state !== null && r.health !== null && r.quarantined !== null)
      dev.components.push({
        component: r.component,
        version: r.version,
        state: r.state,
        health: r.health,
        quarantined: r.quarantined,
      });
  }
  return [...byId.values()];
}

/** The id of the live device holding this token hash, if any. */
export async function liveDeviceIdByTokenHash(db: Db, hash: string): Promise<string | undefined> {
  const row = await db
    .selectFrom('devices')
    .select('id')
    .where('token_hash', '=', hash)
    .where('retired_at', 'is', null)
    .executeTakeFirst();
  return row?.id;
}

/** True when a live device already carries this name. */
export async function nameTaken(db: Db, name: string): Promise<boolean> {
  const row = await db
    .selectFrom('devices')
    .select('id')
    .where('name', '=', name)
    .where('retired_at', 'is', null)
    .executeTakeFirst();
  return row !== undefined;
}

/** Inserts a newly enrolled device. */
export async function insertDevice(
  db: Db,
  d: Pick<Device, 'id' | 'name' | 'tokenHash' | 'labels' | 'enrollLabels' | 'agentVersion'> & { now: number },
): Promise<void> {
  await db
    .insertInto('devices')
    .values({
      id: d.id,
      name: d.name,
      token_hash: d.tokenHash,
      labels: encode(d.labels),
      enroll_labels: encode(d.enrollLabels),
      agent_version: d.agentVersion,
      enrolled_at: d.now,
      last_seen_at: d.now,
      held: 0,
      pins: encode({}),
      retired_at: null,
    })
    .execute();
}

/**
 * Inserts many enrolled devices at once (benchmarks, imports): 1,000 rows per statement (11 columns each, under
 * SQLite's and PostgreSQL's parameter limits), so a million devices take a thousand statements, not a million.
 */
export async function insertDevicesBulk(
  db: Db,
  list: ReadonlyArray<
    Pick<Device, 'id' | 'name' | 'tokenHash' | 'labels' | 'agentVersion'> & { now: number }
  >,
): Promise<void> {
  for (let i = 0; i < list.length; i += 1000)
    await db
      .insertInto('devices')
      .values(
        list.slice(i, i + 1000).map((d) => ({
          id: d.id,
          name: d.name,
          token_hash: d.tokenHash,
          labels: encode(d.labels),
          enroll_labels: encode({}),
          agent_version: d.agentVersion,
          enrolled_at: d.now,
          last_seen_at: d.now,
          held: 0 as const,
          pins: encode({}),
          retired_at: null,
        })),
      )
      .execute();
}

/** Records what a device said about itself at check-in (labels, agent version). */
export async function updateDeviceSelf(
  db: Db,
  id: string,
  labels: Labels,
  agentVersion: string,
): Promise<void> {
  await db
    .updateTable('devices')
    .set({ labels: encode(labels), agent_version: agentVersion })
    .where('id', '=', id)
    .execute();
}

/**
 * Records when devices were last seen (device id → time): one update per distinct time, in chunks. A time never
 * moves back (another replica may have written a later one meanwhile).
 */
export async function markSeen(db: Db, seen: ReadonlyMap<string, number>): Promise<void> {
  const byTime = new Map<number, string[]>();
  for (const [id, at] of seen) {
    const ids = byTime.get(at);
    if (ids) ids.push(id);
    else byTime.set(at, [id]);
  }
  for (const [at, all] of byTime)
    for (let i = 0; i < all.length; i += 256) {
      const ids = padIn(all.slice(i, i + 256));
      await runShaped(db, `markSeen:${ids.length}`, [at, ...ids, at], () =>
        db
          .updateTable('devices')
          .set({ last_seen_at: at })
          .where('id', 'in', ids)
          .where('last_seen_at', '<', at),
      );
    }
}

/** Stores a device's operator controls. */
export async function setControls(db: Db, id: string, c: FleetControls): Promise<void> {
  await db
    .updateTable('devices')
    .set({ held: c.held ? 1 : 0, pins: encode(c.pins), channel: c.channel, deferred_until: c.deferredUntil })
    .where('id', '=', id)
    .execute();
}

/** Retires a device: its token hash becomes `tombstone`, a value no token hashes to (hashes are hex). */
export async function retireDevice(db: Db, id: string, tombstone: string, now: number): Promise<void> {
  await db
    .updateTable('devices')
    .set({ retired_at: now, token_hash: tombstone })
    .where('id', '=', id)
    .execute();
}

/** The operator's pins of one device. */
export async function devicePins(db: Db, id: string): Promise<Pins> {
  const row = await db.selectFrom('devices').select('pins').where('id', '=', id).executeTakeFirst();
  return row ? decode(row.pins) : {};
}

/** The operator's pins of every device, retired ones included (release gc keeps what they name). */
export async function allDevicePins(db: Db): Promise<Pins[]> {
  const rows = await db.selectFrom('devices').select('pins').execute();
  return rows.map((r) => decode(r.pins));
}
