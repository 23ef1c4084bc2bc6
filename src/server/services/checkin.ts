// Applying a batch of check-ins in one database transaction (group commit): set-based reads, writes of only what
// changed, then the answers. Each step below is one named part of that transaction, in order.
import { type ComponentState, componentState, componentStatus } from '../../protocol/component-state.ts';
import type { CheckinRequest, DesiredRelease, Labels, OfferedArtifact } from '../../protocol/device.ts';
import type { ServerContext } from '../context.ts';
import { type Db, inTransaction } from '../db/database.ts';
import { desiredByDevice } from '../db/desired.ts';
import { type DeviceComponentRow, upsertComponents } from '../db/device-components.ts';
import { type StoredSignalSample, upsertSignals } from '../db/device-signals.ts';
import {
  type CheckinDevice,
  checkinDevicesByTokenHash,
  markSeen,
  type Pins,
  type StoredComponent,
  updateDeviceSelf,
} from '../db/devices.ts';
import { decode, encode } from '../db/json.ts';
import { findRelease } from '../db/releases.ts';
import { markCleanRolloutsDirty } from '../db/rollouts.ts';
import { HttpError } from '../errors.ts';
import { effectiveLabels } from '../labels.ts';
import { boundedDetail } from '../limits.ts';
import type { ReportApplier } from './device-reports.ts';
import { deviceWants } from './device-wants.ts';

/** Components the server keeps per device (the agent reports at most 64 per check-in as well). */
export const MAX_COMPONENTS = 64;

/** One check-in of the batch: the device's token hash and what it sent. */
export interface CheckinItem {
  tokenHash: string;
  body: CheckinRequest;
}

/** What a batch gives back: an answer or an error per check-in, in order, and the devices it saw. */
export interface BatchOutcome {
  answers: Array<CheckinResult | Error>;
  /** Ids of the batch's devices (refused check-ins of a known device included): they were seen at `at`. */
  seen: string[];
  /** The batch's time (ms), as its rows record it. */
  at: number;
}

/** The answer to one check-in (the route adds the poll interval, acks and the TUF root). */
export interface CheckinResult {
  device_id: string;
  desired: DesiredRelease[];
}

/** What the batch transaction needs besides the database: limits, report handling, and a release cache. */
export interface CheckinDeps {
  ctx: ServerContext;
  applyReports: ReportApplier;
  artifacts: ReleaseArtifacts;
}

/**
 * Artifact lists of releases, as offered to devices. Releases are immutable, so hits are cached for the life of
 * the process on any replica; misses are not (the release may be imported later).
 */
export class ReleaseArtifacts {
  private readonly cache = new Map<string, OfferedArtifact[]>();

  /** The offered artifacts of component@version, or null when there is no such release. */
  async get(db: Db, component: string, version: string): Promise<OfferedArtifact[] | null> {
    const key = `${component}@${version}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const rel = await findRelease(db, component, version);
    if (!rel) return null;
    const list = rel.artifacts.map((a) => ({
      name: a.name,
      sha256: a.sha256,
      length: a.length,
      ...(typeof a.mode === 'number' ? { mode: a.mode } : {}),
      url: `/v1/blobs/${a.sha256}`,
    }));
    this.cache.set(key, list);
    return list;
  }
}

/** The batch's starting point: its devices by token hash and their stored components. */
interface Loaded {
  byHash: Map<string, CheckinDevice>;
  components: Map<string, StoredComponent>;
  /** How many components each device has stored (bounded: a device cannot grow the table by inventing names). */
  stored: Map<string, number>;
}

/** A device's pins as stored when it has none. */
const NO_PINS = encode<Pins>({});

const key = (deviceId: string, component: string) => `${deviceId}\u0000${component}`;

/** Step 1: the devices of the batch with their components (one set-based read). */
async function load(tx: Db, batch: readonly CheckinItem[]): Promise<Loaded> {
  const devices = await checkinDevicesByTokenHash(tx, [...new Set(batch.map((p) => p.tokenHash))]);
  const l: Loaded = { byHash: new Map(), components: new Map(), stored: new Map() };
  for (const d of devices) {
    l.byHash.set(d.tokenHash, d);
    l.stored.set(d.id, d.components.length);
    for (const c of d.components) l.components.set(key(d.id, c.component), c);
  }
  return l;
}

/** Step 2a: refuses a check-in that would store more than MAX_COMPONENTS components for its device. */
function checkComponentBound(
  l: Loaded,
  added: Set<string>,
  dev: CheckinDevice,
  body: CheckinRequest,
): HttpError | null {
  let fresh: Set<string> | null = null; // names not stored yet (a steady check-in has none)
  for (const c of body.components) {
    const k = key(dev.id, c.name);
    if (l.components.has(k) || added.has(k)) continue;
    fresh ??= new Set();
    fresh.add(k);
  }
  if (!fresh) return null;
  const count = (l.stored.get(dev.id) ?? 0) + fresh.size;
  if (count > MAX_COMPONENTS) return new HttpError(400, `at most ${MAX_COMPONENTS} components per device`);
  l.stored.set(dev.id, count);
  for (const k of fresh) added.add(k);
  return null;
}

/** Step 2b: records the device's own labels (its enrollment labels always win) and agent version, if changed. */
async function recordSelf(
  deps: CheckinDeps,
  tx: Db,
  dev: CheckinDevice,
  body: CheckinRequest,
): Promise<void> {
  // Without labels in the check-in the stored ones stand: compared as stored text, never decoded.
  const labels: Labels | null = body.labels
    ? effectiveLabels(deps.ctx, body.labels, decode(dev.enrollLabels))
    : null;
  const text = labels ? encode(labels) : dev.labels;
  const agentVersion = body.agent_version ?? dev.agentVersion;
  if (text === dev.labels && agentVersion === dev.agentVersion) return;
  await updateDeviceSelf(tx, dev.id, labels ?? decode(dev.labels), agentVersion);
  // The loaded device follows the row: a second check-in of the same device in this batch compares with it.
  dev.labels = text;
  dev.agentVersion = agentVersion;
}

/** Step 2c: the component rows that changed (a steady-state check-in writes none). */
function changedComponents(
  deps: CheckinDeps,
  l: Loaded,
  dev: CheckinDevice,
  body: CheckinRequest,
  now: number,
): DeviceComponentRow[] {
  const out: DeviceComponentRow[] = [];
  for (const c of body.components) {
    const state: ComponentState = componentState(componentStatus(c));
    const row: DeviceComponentRow = {
      device_id: dev.id,
      component: c.name,
      version: c.version ?? null,
      state,
      health: encode(boundedDetail(c.health, deps.ctx.guards.limits.detailMaxBytes)),
      quarantined: encode(c.quarantined ?? []),
      updated_at: now,
    };
    const old = l.components.get(key(dev.id, c.name));
    if (
      old &&
      old.version === row.version &&
      old.state === row.state &&
      old.health === row.health &&
      old.quarantined === row.quarantined
    )
      continue;
    out.push(row);
  }
  return out;
}

/** Step 2: records each check-in (bounds, labels, components); returns the check-ins refused, with why. */
async function record(
  deps: CheckinDeps,
  tx: Db,
  l: Loaded,
  batch: readonly CheckinItem[],
  now: number,
): Promise<Map<CheckinItem, Error>> {
  const refused = new Map<CheckinItem, Error>();
  const added = new Set<string>();
  const upserts = new Map<string, DeviceComponentRow>();
  const signals = new Map<string, StoredSignalSample>();
  for (const p of batch) {
    const dev = l.byHash.get(p.tokenHash);
    if (!dev) continue;
    const tooMany = checkComponentBound(l, added, dev, p.body);
    if (tooMany) {
      refused.set(p, tooMany);
      continue;
    }
    try {
      await recordSelf(deps, tx, dev, p.body);
    } catch (e) {
      refused.set(p, e instanceof Error ? e : new Error(String(e)));
      continue;
    }
    for (const row of changedComponents(deps, l, dev, p.body, now))
      upserts.set(key(dev.id, row.component), row);
    // An agent sends a sample once, at the check-in after taking it (the schema bounds names, count and values).
    for (const c of p.body.components)
      if (c.signals)
        signals.set(key(dev.id, c.name), {
          deviceId: dev.id,
          component: c.name,
          sampledAt: c.signals.at,
          version: c.version ?? null,
          values: c.signals.values,
          receivedAt: now,
        });
  }
  await upsertComponents(tx, [...upserts.values()]);
  await upsertSignals(tx, [...signals.values()]);
  return refused;
}

/**
 * Records when devices were last seen (id → time of their check-in's batch), in a transaction of its own; rollouts
 * rolling back then look again (they confirm a revert by a check-in after it was ordered). The batcher calls it a
 * moment after the batches it covers: last-seen is the one write a steady check-in makes, and a device that checks
 * in often is then written once per flush, not per check-in.
 */
export async function recordSeen(ctx: ServerContext, seen: ReadonlyMap<string, number>): Promise<void> {
  await inTransaction(ctx.store, async (tx) => {
    await markSeen(tx, seen);
    await markCleanRolloutsDirty(tx, 'rolling-back');
  });
}

/** Step 3: each accepted check-in's reports, applied to the assignments they belong to. */
async function applyAllReports(
  deps: CheckinDeps,
  tx: Db,
  l: Loaded,
  batch: readonly CheckinItem[],
  refused: Map<CheckinItem, Error>,
  now: number,
): Promise<void> {
  for (const p of batch) {
    const dev = l.byHash.get(p.tokenHash);
    if (dev && !refused.has(p) && p.body.reports?.length)
      await deps.applyReports(tx, dev.id, p.body.reports, now);
  }
}

/** Step 4: the answers, in batch order: the releases each device should run, or why its check-in was refused. */
async function answers(
  deps: CheckinDeps,
  tx: Db,
  l: Loaded,
  batch: readonly CheckinItem[],
  refused: Map<CheckinItem, Error>,
  desired: Map<string, Map<string, string>>,
): Promise<Array<CheckinResult | Error>> {
  const out: Array<CheckinResult | Error> = [];
  for (const p of batch) {
    const dev = l.byHash.get(p.tokenHash);
    if (!dev) {
      out.push(new HttpError(401, 'unknown device token'));
      continue;
    }
    const err = refused.get(p);
    if (err) {
      out.push(err);
      continue;
    }
    const wanted = desired.get(dev.id);
    // Nothing desired and nothing pinned (most check-ins): nothing to offer, nothing to work out.
    if (!wanted && dev.pins === NO_PINS) {
      out.push({ device_id: dev.id, desired: [] });
      continue;
    }
    const wants = deviceWants({
      desired: wanted ?? new Map(),
      pins: decode(dev.pins),
      held: dev.held,
      current: new Map(p.body.components.map((c) => [c.name, c.version ?? null])),
    });
    const list: DesiredRelease[] = [];
    for (const [component, version] of wants) {
      const artifacts = await deps.artifacts.get(tx, component, version);
      if (artifacts) list.push({ component, version, artifacts });
    }
    out.push({ device_id: dev.id, desired: list });
  }
  return out;
}

/**
 * Applies a batch of check-ins in one transaction; returns an answer or an error per check-in, in order, and the
 * devices seen (the caller records them with recordSeen, see there).
 */
export async function applyCheckinBatch(
  deps: CheckinDeps,
  batch: readonly CheckinItem[],
): Promise<BatchOutcome> {
  const now = deps.ctx.clock();
  return deps.ctx.store.db.transaction().execute(async (tx) => {
    const l = await load(tx, batch);
    if (l.byHash.size === 0)
      return { answers: batch.map(() => new HttpError(401, 'unknown device token')), seen: [], at: now };
    const seen = [...l.byHash.values()].map((d) => d.id);
    // Read before the reports are applied, as before: a report does not change what this answer offers.
    const desired = await desiredByDevice(tx, seen);
    const refused = await record(deps, tx, l, batch, now);
    await applyAllReports(deps, tx, l, batch, refused, now);
    return { answers: await answers(deps, tx, l, batch, refused, desired), seen, at: now };
  });
}
