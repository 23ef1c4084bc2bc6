// The tag of a device's desired answer, for wake-ups: a short hash of what the check-in answer offers, computed
// from content (never a counter), so every replica computes the same tag for the same state.
import { createHash } from 'node:crypto';
import type { Db } from '../db/database.ts';
import { desiredByDevice } from '../db/desired.ts';
import { componentRows } from '../db/device-components.ts';
import { type Device, liveDevicesByTokenHash } from '../db/devices.ts';
import type { ReleaseArtifacts } from './checkin.ts';
import { deviceWants } from './device-wants.ts';

const tagOf = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 16);
/** Most check-ins are told nothing: their tag is computed once. */
const EMPTY_TAG = tagOf('');

/** 16 hex digits of sha256 over the sorted (component, version) pairs; artifacts follow from the release. */
export function desiredTag(desired: ReadonlyArray<{ component: string; version: string }>): string {
  if (desired.length === 0) return EMPTY_TAG;
  const pairs = desired.map((d) => `${d.component}\u0000${d.version}`).sort();
  return tagOf(pairs.join('\n'));
}

/** The live device holding this token hash, if any. */
export async function deviceByTokenHash(db: Db, hash: string): Promise<Device | undefined> {
  return (await liveDevicesByTokenHash(db, [hash]))[0];
}

/**
 * The tag of what a check-in would offer the device now: the same rule as the check-in (desired rows, operator
 * pins and hold through deviceWants, releases that exist), with the versions it last reported as its current.
 */
export async function currentDesiredTag(db: Db, dev: Device, artifacts: ReleaseArtifacts): Promise<string> {
  const [desired, rows] = await Promise.all([desiredByDevice(db, [dev.id]), componentRows(db, [dev.id])]);
  const wants = deviceWants({
    desired: desired.get(dev.id) ?? new Map(),
    pins: dev.pins,
    held: dev.held,
    current: new Map(rows.map((r) => [r.component, r.version])),
  });
  const offered: Array<{ component: string; version: string }> = [];
  for (const [component, version] of wants)
    if (await artifacts.get(db, component, version)) offered.push({ component, version });
  return desiredTag(offered);
}
