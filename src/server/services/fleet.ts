// Fleet operations an operator performs: enrollment tokens, retiring a device, and the per-device controls
// set by selector (hold, pin, channel, deferral), which always win over rollouts. Each is one transaction,
// audited, callable from routes, the CLI and tests.
import { randomUUID } from 'node:crypto';
import { ACTIVE } from '../../engine/rollout-state.ts';
import { matches, parseSelector, type Selector } from '../../engine/selector.ts';
import type { Labels } from '../../protocol/device.ts';
import { skipOpenAssignments } from '../db/assignments.ts';
import { appendAudit } from '../db/audit.ts';
import type { Db } from '../db/database.ts';
import { clearDesired } from '../db/desired.ts';
import { componentRows, type DeviceComponent, toDeviceComponent } from '../db/device-components.ts';
import {
  type Device,
  type FleetControls,
  liveDevices,
  liveDevicesByKey,
  retireDevice as retireDeviceRow,
  setControls,
} from '../db/devices.ts';
import { insertToken, revokeToken } from '../db/enroll-tokens.ts';
import { markRolloutsDirty, nextAssignmentRev } from '../db/rollouts.ts';
import { badRequest, conflict, forbidden, HttpError, notFound } from '../errors.ts';
import { hashToken, newToken } from '../tokens.ts';
import type { WakeBus } from '../wake/bus.ts';

/** A new enrollment token: its id, the token (shown once) and its uses (null: unlimited). */
export interface NewEnrollToken {
  id: string;
  token: string;
  uses: number | null;
}

/** Creates an enrollment token (single-use unless `uses` says otherwise). */
export async function createEnrollToken(
  db: Db,
  req: { uses?: number | null; expiresInS?: number; labels?: Labels },
  now: number,
  actor: string,
): Promise<NewEnrollToken> {
  const token = newToken('enr');
  const id = `enr-${randomUUID().slice(0, 8)}`;
  const uses = req.uses === undefined ? 1 : req.uses;
  await db.transaction().execute(async (tx) => {
    await insertToken(tx, {
      id,
      hash: hashToken(token),
      uses,
      expiresAt: req.expiresInS ? now + req.expiresInS * 1000 : null,
      labels: req.labels ?? {},
      now,
    });
    await appendAudit(tx, {
      at: now,
      actor,
      action: 'enroll-token.created',
      subject: `enroll-token/${id}`,
      detail: { uses },
    });
  });
  return { id, token, uses };
}

/** Revokes an enrollment token (404 when there is none), audited. */
export async function revokeEnrollToken(db: Db, id: string, now: number, actor: string): Promise<void> {
  await db.transaction().execute(async (tx) => {
    if (!(await revokeToken(tx, id))) throw notFound(`no enrollment token ${id}`);
    await appendAudit(tx, { at: now, actor, action: 'enroll-token.revoked', subject: `enroll-token/${id}` });
  });
}

/** A live device with its components. */
export interface DeviceWithComponents {
  device: Device;
  components: DeviceComponent[];
}

/** Every live device with its components, by name. */
export async function listDevices(db: Db): Promise<DeviceWithComponents[]> {
  const [devices, rows] = await Promise.all([liveDevices(db), componentRows(db)]);
  const byDev = new Map<string, DeviceComponent[]>();
  for (const r of rows) {
    const list = byDev.get(r.device_id) ?? [];
    list.push(toDeviceComponent(r));
    byDev.set(r.device_id, list);
  }
  return devices.map((device) => ({ device, components: byDev.get(device.id) ?? [] }));
}

/**
 * One live device by id or name, with its components, or undefined. A device id always wins; a name that several
 * devices carry is refused (409) rather than guessed.
 */
export async function findDevice(db: Db, key: string): Promise<DeviceWithComponents | undefined> {
  let rows = await liveDevicesByKey(db, key);
  if (rows.length > 1) {
    const exact = rows.filter((r) => r.id === key);
    if (exact.length !== 1) throw conflict(`${rows.length} devices are named "${key}": use a device id`);
    rows = exact;
  }
  const [device] = rows;
  if (!device) return undefined;
  return { device, components: (await componentRows(db, [device.id])).map(toDeviceComponent) };
}

/**
 * Retires a device: its token stops working, it leaves every rollout, its history stays. `actor` is the operator
 * (routes always pass it; an in-process caller without one is the server itself).
 */
export async function retireDevice(
  db: Db,
  device: Device,
  reason: string | undefined,
  now: number,
  wake?: WakeBus,
  actor = 'server',
): Promise<{ leftRollouts: number }> {
  const out = await db.transaction().execute(async (tx) => {
    await retireDeviceRow(tx, device.id, `retired:${device.id}:${randomUUID()}`, now);
    await clearDesired(tx, device.id);
    const left = await skipOpenAssignments(tx, device.id, 'device retired', now, (id) =>
      nextAssignmentRev(tx, id, false),
    );
    await markRolloutsDirty(tx, ACTIVE);
    await appendAudit(tx, {
      at: now,
      actor,
      action: 'device.retired',
      subject: `device/${device.id}`,
      detail: { name: device.name, reason },
    });
    return { leftRollouts: left };
  });
  wake?.notify([device.id]); // committed: a held wait ends, and the next check-in learns it was retired
  return out;
}

/** Parses an operator's selector (400 with the parser's message). */
export function selectorOrRefuse(source: string): Selector {
  try {
    return parseSelector(source);
  } catch (e) {
    throw badRequest(e instanceof Error ? e.message : String(e));
  }
}

/** A change of the controls of every device a selector matches, and how to audit it. */
export interface ControlChange {
  /** Who asks (the audit log's actor). */
  actor: string;
  selector: string;
  /** A selector that matches nothing is almost always a typo: refused unless this is set. */
  allowEmpty?: boolean;
  action: string;
  detail: Record<string, unknown>;
  change: (c: FleetControls) => FleetControls;
  /** At most this many devices (403 with `refusal`, nothing changed): a pin's reach for a non-admin. */
  maxDevices?: { limit: number; refusal: (matched: number) => string };
}

/**
 * Applies a control change to every live device the selector matches, in one transaction, audited; then tells
 * `wake` (when given) which devices it touched.
 */
export async function changeControls(
  db: Db,
  c: ControlChange,
  now: number,
  wake?: WakeBus,
): Promise<{ devices: string[] }> {
  const sel = selectorOrRefuse(c.selector);
  const out = await db.transaction().execute(async (tx) => {
    const hit: string[] = [];
    for (const d of await liveDevices(tx)) {
      if (!matches(sel, { ...d.labels, id: d.id })) continue;
      await setControls(
        tx,
        d.id,
        c.change({ held: d.held, pins: d.pins, channel: d.channel, deferredUntil: d.deferredUntil }),
      );
      hit.push(d.id);
    }
    if (hit.length === 0 && !c.allowEmpty)
      throw new HttpError(404, `selector "${c.selector}" matches no device (allow_empty to accept)`);
    if (c.maxDevices && hit.length > c.maxDevices.limit) throw forbidden(c.maxDevices.refusal(hit.length));
    await appendAudit(tx, {
      at: now,
      actor: c.actor,
      action: c.action,
      subject: `selector/${c.selector}`,
      detail: { ...c.detail, devices: hit.length },
    });
    await markRolloutsDirty(tx);
    return { devices: hit };
  });
  wake?.notify(out.devices); // after commit: what those devices are told may have changed
  return out;
}
