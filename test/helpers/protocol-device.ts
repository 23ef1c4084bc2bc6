// A device that speaks the real device protocol over HTTP, driven step by step by a test (no agent process):
// for server-side behaviour where the test must decide exactly what each device reports and when.
import { api, type Conn } from '../../src/cli/client.ts';
import type { RolloutView } from '../../src/server/routes/admin-rollouts.ts';
import { until } from './server.ts';

export interface ProtocolDevice {
  id: string;
  token: string;
  name: string;
  version: string | null;
  state: string;
}

export interface Offer {
  component: string;
  version: string;
}

/**
 * Enrolls n devices with the given labels through /v1/enroll. With `component`, each then checks in once
 * reporting it at `version` (by default none yet, as a freshly started agent does): rollouts offer a component
 * only to devices that run it.
 */
export async function enrollDevices(
  conn: Conn,
  labels: Array<Record<string, string>>,
  component?: string,
  version: string | null = null,
): Promise<ProtocolDevice[]> {
  const tok = await api<{ token: string }>(conn, 'POST', '/v1/admin/enroll-tokens', { uses: labels.length });
  const out: ProtocolDevice[] = [];
  const batch = tok.token.slice(-6); // device names are unique per server: one prefix per call
  for (const [i, l] of labels.entries()) {
    const name = `pd-${batch}-${i}`;
    const res = await fetch(new URL('/v1/enroll', conn.server), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: tok.token, name, labels: l }),
    });
    const b = (await res.json()) as { device_id: string; device_token: string };
    out.push({ id: b.device_id, token: b.device_token, name, version, state: 'idle' });
  }
  if (component) for (const d of out) await checkin(conn, d, component);
  return out;
}

/** One check-in for component `component`; returns the offers in the answer. */
export async function checkin(
  conn: Conn,
  d: ProtocolDevice,
  component: string,
  reports: unknown[] = [],
): Promise<Offer[]> {
  const res = await fetch(new URL('/v1/checkin', conn.server), {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${d.token}` },
    body: JSON.stringify({ components: [{ name: component, version: d.version, state: d.state }], reports }),
  });
  if (!res.ok) throw new Error(`check-in ${res.status}: ${await res.text()}`);
  const b = (await res.json()) as { desired: Offer[] };
  return b.desired;
}

let txn = 0;
/** Checks in, and if offered a new version, "installs" it and reports the outcome in a second check-in. */
export async function cycle(
  conn: Conn,
  d: ProtocolDevice,
  component: string,
  outcome: 'succeeded' | 'rolled-back' = 'succeeded',
): Promise<string | null> {
  const offers = await checkin(conn, d, component);
  const o = offers.find((x) => x.component === component);
  if (!o || o.version === d.version) return null;
  const report = { txn_id: `t-${process.pid}-${++txn}`, component, version: o.version, outcome };
  if (outcome === 'succeeded') d.version = o.version;
  await checkin(conn, d, component, [report]);
  return o.version;
}

/** Uploads a one-file release and approves it. */
export async function release(conn: Conn, component: string, version: string): Promise<void> {
  const up = await fetch(new URL('/v1/admin/blobs', conn.server), {
    method: 'POST',
    headers: { authorization: `Bearer ${conn.token}`, 'content-type': 'application/octet-stream' },
    body: `${component} ${version}\n`,
  });
  const blob = (await up.json()) as { sha256: string; length: number };
  await api(conn, 'POST', '/v1/admin/releases', {
    component,
    version,
    artifacts: [{ name: 'c.txt', ...blob }],
  });
  await api(conn, 'POST', `/v1/admin/releases/${component}@${version}/approve`, {});
}

/** Starts a rollout of `ref` (component@version) with the plan named `plan`; returns its id. */
export async function startRollout(conn: Conn, ref: string, plan: string): Promise<number> {
  return (await api<RolloutView>(conn, 'POST', '/v1/admin/rollouts', { release: ref, plan })).id;
}

/**
 * Cycles every device (each installs what it is offered and reports success) until rollout `id` satisfies `ok`;
 * returns the rollout as it then is.
 */
export function cycleUntil(
  conn: Conn,
  devs: ProtocolDevice[],
  component: string,
  id: number,
  ok: (r: RolloutView) => boolean,
  what: string,
  ms = 30_000,
): Promise<RolloutView> {
  return until(
    async () => {
      for (const d of devs) await cycle(conn, d, component);
      return api<RolloutView>(conn, 'GET', `/v1/admin/rollouts/${id}`);
    },
    ok,
    ms,
    what,
  );
}
