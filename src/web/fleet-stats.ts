// Pure figures for the dashboard (no DOM, no fetch): what the overview counts and how times and filters read.
import { ACTIVE } from '../engine/rollout-state.ts';
import type { DeviceSummary, RolloutView } from './types.ts';

/** A device that has not checked in for this long is shown as stale (agents poll every 30 s by default). */
export const STALE_AFTER_MS = 5 * 60_000;

/** Rollouts that still own devices: the engine's own set (rollout-state.ts has no runtime imports, so it stays tiny in the bundle). */
export const LIVE: ReadonlySet<string> = ACTIVE;

export interface ActiveRollout {
  id: number;
  release: string;
  status: string;
  wave: string | null;
  exposed: number;
  /** exposed devices as a share of the fleet, 0..1 */
  share: number;
}

export interface Overview {
  fleet: number;
  recent: number;
  stale: number;
  held: number;
  quarantined: number;
  active: ActiveRollout[];
}

export function isStale(d: DeviceSummary, now: number): boolean {
  return now - d.last_seen_at > STALE_AFTER_MS;
}

export function overview(devices: DeviceSummary[], rollouts: RolloutView[], now: number): Overview {
  const stale = devices.filter((d) => isStale(d, now)).length;
  return {
    fleet: devices.length,
    recent: devices.length - stale,
    stale,
    held: devices.filter((d) => d.held).length,
    quarantined: devices.filter((d) => d.components.some((c) => c.quarantined.length > 0)).length,
    active: rollouts
      .filter((r) => LIVE.has(r.status))
      .map((r) => ({
        id: r.id,
        release: `${r.component}@${r.version}`,
        status: r.status,
        wave: r.wave,
        exposed: r.exposed,
        share: devices.length ? r.exposed / devices.length : 0,
      })),
  };
}

/** "12 s ago", "4 min ago", "3 h ago", "2 d ago". */
export function ago(at: number, now: number): string {
  const s = Math.max(0, Math.round((now - at) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86_400)} d ago`;
}

export function percent(share: number): string {
  if (share > 0 && share < 0.001) return '<0.1%';
  return `${(share * 100).toFixed(share < 0.1 ? 1 : 0)}%`;
}

/** Every word of the filter must appear in the device's name, id, labels (k=v), components or flags. */
export function matchesFilter(d: DeviceSummary, filter: string): boolean {
  const words = filter.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return true;
  const hay = [
    d.name,
    d.id,
    d.channel,
    ...Object.entries(d.labels).map(([k, v]) => `${k}=${v}`),
    ...d.components.map((c) => `${c.name}@${c.version ?? '-'} ${c.state} ${c.quarantined.join(' ')}`),
    d.held ? 'held' : '',
    d.components.some((c) => c.quarantined.length) ? 'quarantined' : '',
  ]
    .join(' ')
    .toLowerCase();
  return words.every((w) => hay.includes(w));
}
