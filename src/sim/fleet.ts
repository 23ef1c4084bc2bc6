// Simulated fleets: generated with realistic labels for `--fleet N`, or read from an inventory.
// Identical label sets are shared (interned), which is what lets a million devices fit in memory.
import type { DeviceView } from '../engine/rollout.ts';
import type { Labels } from '../engine/selector.ts';
import type { Rng } from './prng.ts';

export interface SimFleet {
  ids: string[];
  labels: Labels[];
}

/** The engine's view of a simulated fleet: every device free to take the release, running `version`. */
export function engineView(fleet: SimFleet, version: string | null): DeviceView[] {
  return fleet.ids.map((id, i) => ({
    id,
    labels: fleet.labels[i],
    held: false,
    pinned: false,
    busy: false,
    version,
  }));
}

/** Sites and the IANA zones they run in (maintenance windows are local time). */
export const SITES: ReadonlyArray<readonly [string, string]> = [
  ['fra1', 'Europe/Berlin'],
  ['ams1', 'Europe/Amsterdam'],
  ['lon1', 'Europe/London'],
  ['nyc1', 'America/New_York'],
  ['chi1', 'America/Chicago'],
  ['sfo1', 'America/Los_Angeles'],
  ['sao1', 'America/Sao_Paulo'],
  ['bom1', 'Asia/Kolkata'],
  ['sgp1', 'Asia/Singapore'],
  ['tyo1', 'Asia/Tokyo'],
  ['syd1', 'Australia/Sydney'],
  ['jnb1', 'Africa/Johannesburg'],
];

type Kind = { role: string; clusterMin: number; clusterMax: number; weight: number; os: string };

// Databases come as clusters (one primary, replicas); stateless roles as small pools; desktops alone.
const KINDS: Kind[] = [
  { role: 'db', clusterMin: 2, clusterMax: 4, weight: 15, os: 'sle-micro' },
  { role: 'app', clusterMin: 2, clusterMax: 6, weight: 35, os: 'sle-micro' },
  { role: 'edge', clusterMin: 1, clusterMax: 3, weight: 20, os: 'sle-micro' },
  { role: 'desktop', clusterMin: 1, clusterMax: 1, weight: 30, os: 'windows' },
];

function pickWeighted<T extends { weight: number }>(rng: Rng, items: readonly T[]): T {
  const total = items.reduce((s, i) => s + i.weight, 0);
  let x = rng.next() * total;
  for (const i of items) {
    x -= i.weight;
    if (x < 0) return i;
  }
  return items[items.length - 1];
}

/**
 * Generates n devices: env dev 3 % / staging 7 % / prod 90 %; tiers A 20 % / B 30 % / C 50 %;
 * database clusters with a primary and replicas, app pools, edge boxes and desktops; 12 sites in
 * their time zones; and a canary ring of ~1 % of prod (at least 2 devices).
 */
export function generateFleet(n: number, rng: Rng): SimFleet {
  const ids: string[] = new Array(n);
  const labels: Labels[] = new Array(n);
  const interned = new Map<string, Labels>();
  const width = String(n).length;
  let i = 0;
  let group = 0;
  let canaries = 0;
  while (i < n) {
    const kind = pickWeighted(rng, KINDS);
    const envRoll = rng.next();
    const env = envRoll < 0.03 ? 'dev' : envRoll < 0.1 ? 'staging' : 'prod';
    const tierRoll = rng.next();
    const tier = tierRoll < 0.2 ? 'A' : tierRoll < 0.5 ? 'B' : 'C';
    const [site, tz] = rng.pick(SITES);
    const size = Math.min(n - i, rng.int(kind.clusterMin, kind.clusterMax));
    const cluster = `${kind.role}-${site}-${(group++).toString(36)}`;
    for (let k = 0; k < size; k++, i++) {
      const role =
        kind.role === 'db' ? (k === 0 ? 'primary' : 'replica') : kind.role === 'app' ? 'replica' : kind.role;
      const l: Record<string, string> = { env, tier, role, kind: kind.role, cluster, site, tz, os: kind.os };
      // The canary ring: a thin, deliberate slice of production that always goes first.
      const wantCanary = env === 'prod' && (canaries < 2 || rng.chance(0.01));
      if (wantCanary && role !== 'primary') {
        l.ring = 'canary';
        canaries++;
      }
      const key = JSON.stringify(l);
      let shared = interned.get(key);
      if (!shared) {
        shared = Object.freeze(l);
        interned.set(key, shared);
      }
      ids[i] = `dev-${String(i + 1).padStart(width, '0')}`;
      labels[i] = shared;
    }
  }
  return { ids, labels };
}

/** A fleet from an inventory of label sets (ids from an `id` label when present). */
export function fleetFromLabels(list: readonly Labels[]): SimFleet {
  const width = String(list.length).length;
  return {
    ids: list.map((l, i) => l.id ?? l.name ?? `dev-${String(i + 1).padStart(width, '0')}`),
    labels: [...list],
  };
}
