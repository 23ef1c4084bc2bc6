// Check-ins in batches: concurrent check-ins that arrive together are handled in one database transaction
// with set-based reads and writes (group commit). Under load this turns N small transactions into one, which
// is what keeps check-in latency flat as fleets grow; with one device at a time it is a batch of one.

import { HttpError, type ServerContext } from './context.ts';
import type { Db } from './db/database.ts';
import { effectiveLabels } from './labels.ts';
import { boundedDetail } from './limits.ts';

export interface CheckinComponent {
  name: string;
  version?: string | null;
  state: string;
  health?: Record<string, unknown>;
  quarantined?: string[];
}

export interface CheckinReport {
  txn_id: string;
  component: string;
  version: string;
  from_version?: string | null;
  outcome: 'succeeded' | 'failed' | 'rolled-back' | 'refused';
  class?: string;
  reason?: string;
  detail?: Record<string, unknown>;
  at?: number;
  offline?: boolean;
}

export interface CheckinBody {
  labels?: Record<string, string>;
  agent_version?: string;
  components: CheckinComponent[];
  reports?: CheckinReport[];
}

export interface DesiredRelease {
  component: string;
  version: string;
  /** `mode`: the file mode the release records (absent for releases imported without one; devices use 0o644). */
  artifacts: Array<{ name: string; sha256: string; length: number; mode?: number; url: string }>;
}

export interface CheckinAnswer {
  device_id: string;
  desired: DesiredRelease[];
}

/** Applies one device's reports inside the batch transaction (see routes/device.ts). */
export type ReportApplier = (
  tx: Db,
  deviceId: string,
  reports: CheckinReport[],
  now: number,
) => Promise<number>;

interface Pending {
  tokenHash: string;
  body: CheckinBody;
  resolve: (a: CheckinAnswer) => void;
  reject: (e: unknown) => void;
}

const MAX_BATCH = 256;
/** Components the server keeps per device (the agent reports at most 64 per check-in as well). */
const MAX_COMPONENTS = 64;

export class CheckinBatcher {
  private queue: Pending[] = [];
  private running = false;
  // Releases are immutable, so their artifact lists can be cached for the life of the process on any replica.
  private releases = new Map<string, DesiredRelease['artifacts'] | null>();

  constructor(
    private readonly ctx: ServerContext,
    private readonly applyReports: ReportApplier,
  ) {}

  /** Queues one check-in; resolves when the batch holding it has committed. */
  submit(tokenHash: string, body: CheckinBody): Promise<CheckinAnswer> {
    return new Promise((resolve, reject) => {
      this.queue.push({ tokenHash, body, resolve, reject });
      if (!this.running) {
        this.running = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, MAX_BATCH);
      try {
        const answers = await this.process(batch);
        batch.forEach((p, i) => {
          const a = answers[i];
          if (a instanceof Error) p.reject(a);
          else p.resolve(a);
        });
      } catch (err) {
        // One bad check-in must not fail its neighbours: retry them one by one.
        if (batch.length === 1) batch[0].reject(err);
        else {
          for (const p of batch) {
            try {
              const [a] = await this.process([p]);
              if (a instanceof Error) p.reject(a);
              else p.resolve(a);
            } catch (e) {
              p.reject(e);
            }
          }
        }
      }
    }
    this.running = false;
  }

  private async artifacts(
    tx: Db,
    component: string,
    version: string,
  ): Promise<DesiredRelease['artifacts'] | null> {
    const key = `${component}@${version}`;
    if (this.releases.has(key)) return this.releases.get(key) ?? null;
    const rel = await tx
      .selectFrom('releases')
      .select('artifacts')
      .where('component', '=', component)
      .where('version', '=', version)
      .executeTakeFirst();
    const list = rel
      ? (
          JSON.parse(rel.artifacts) as Array<{ name: string; sha256: string; length: number; mode?: unknown }>
        ).map((a) => ({
          name: a.name,
          sha256: a.sha256,
          length: a.length,
          ...(typeof a.mode === 'number' ? { mode: a.mode } : {}),
          url: `/v1/blobs/${a.sha256}`,
        }))
      : null;
    if (list) this.releases.set(key, list); // misses are not cached: the release may be imported later
    return list;
  }

  /** Handles a batch in one transaction; returns an answer or an HttpError per item, in order. */
  private async process(batch: Pending[]): Promise<Array<CheckinAnswer | Error>> {
    const now = this.ctx.clock();
    return this.ctx.store.db.transaction().execute(async (tx) => {
      const hashes = [...new Set(batch.map((p) => p.tokenHash))];
      const devRows = await tx
        .selectFrom('devices')
        .select(['id', 'token_hash', 'held', 'pins', 'labels', 'enroll_labels', 'agent_version'])
        .where('token_hash', 'in', hashes)
        .where('retired_at', 'is', null)
        .execute();
      const byHash = new Map(devRows.map((d) => [d.token_hash, d]));
      const ids = devRows.map((d) => d.id);
      if (ids.length === 0) return batch.map(() => new HttpError(401, 'unknown device token'));

      const compRows = await tx
        .selectFrom('device_components')
        .selectAll()
        .where('device_id', 'in', ids)
        .execute();
      const known = new Map(compRows.map((c) => [`${c.device_id}\u0000${c.component}`, c]));
      // Components stored per device are bounded: a device cannot grow the table by inventing names.
      const stored = new Map<string, number>();
      for (const c of compRows) stored.set(c.device_id, (stored.get(c.device_id) ?? 0) + 1);
      const desiredRows = await tx
        .selectFrom('desired')
        .select(['device_id', 'component', 'version'])
        .where('device_id', 'in', ids)
        .execute();

      // Only what changed is written: a steady-state check-in costs one shared last-seen update.
      const compUpserts = new Map<string, Record<string, unknown>>();
      const refused = new Map<Pending, Error>();
      const added = new Set<string>();
      const { detailMaxBytes } = this.ctx.guards.limits;
      for (const p of batch) {
        const dev = byHash.get(p.tokenHash);
        if (!dev) continue;
        const fresh = new Set(
          p.body.components
            .map((c) => `${dev.id}\u0000${c.name}`)
            .filter((k) => !known.has(k) && !added.has(k)),
        );
        if ((stored.get(dev.id) ?? 0) + fresh.size > MAX_COMPONENTS) {
          refused.set(p, new HttpError(400, `at most ${MAX_COMPONENTS} components per device`));
          continue;
        }
        stored.set(dev.id, (stored.get(dev.id) ?? 0) + fresh.size);
        for (const k of fresh) added.add(k);
        // The device's own labels are replaced by what it says now; its enrollment labels always win.
        let labels = dev.labels;
        try {
          if (p.body.labels)
            labels = JSON.stringify(effectiveLabels(this.ctx, p.body.labels, JSON.parse(dev.enroll_labels)));
        } catch (e) {
          refused.set(p, e as Error);
          continue;
        }
        const agentVersion = p.body.agent_version ?? dev.agent_version;
        if (labels !== dev.labels || agentVersion !== dev.agent_version) {
          await tx
            .updateTable('devices')
            .set({ labels, agent_version: agentVersion })
            .where('id', '=', dev.id)
            .execute();
          dev.labels = labels;
          dev.agent_version = agentVersion;
        }
        for (const c of p.body.components) {
          const row = {
            device_id: dev.id,
            component: c.name,
            version: c.version ?? null,
            state: c.state,
            health: JSON.stringify(boundedDetail(c.health, detailMaxBytes)),
            quarantined: JSON.stringify(c.quarantined ?? []),
          };
          const old = known.get(`${dev.id}\u0000${c.name}`);
          if (
            old &&
            old.version === row.version &&
            old.state === row.state &&
            old.health === row.health &&
            old.quarantined === row.quarantined
          ) {
            continue;
          }
          compUpserts.set(`${dev.id}\u0000${c.name}`, { ...row, updated_at: now });
        }
      }
      const rows = [...compUpserts.values()] as Array<{
        device_id: string;
        component: string;
        version: string | null;
        state: string;
        health: string;
        quarantined: string;
        updated_at: number;
      }>;
      for (let i = 0; i < rows.length; i += 200) {
        await tx
          .insertInto('device_components')
          .values(rows.slice(i, i + 200))
          .onConflict((oc) =>
            oc.columns(['device_id', 'component']).doUpdateSet((eb) => ({
              version: eb.ref('excluded.version'),
              state: eb.ref('excluded.state'),
              health: eb.ref('excluded.health'),
              quarantined: eb.ref('excluded.quarantined'),
              updated_at: eb.ref('excluded.updated_at'),
            })),
          )
          .execute();
      }
      await tx.updateTable('devices').set({ last_seen_at: now }).where('id', 'in', ids).execute();
      // A rollout that is rolling back confirms reverts by what devices show at check-in: let it look again
      // (the driver throttles such steps; no rollout rolling back, no row touched).
      await tx
        .updateTable('rollouts')
        .set({ dirty: 1 })
        .where('status', '=', 'rolling-back')
        .where('dirty', '=', 0)
        .execute();

      for (const p of batch) {
        const dev = byHash.get(p.tokenHash);
        if (dev && !refused.has(p) && p.body.reports?.length)
          await this.applyReports(tx, dev.id, p.body.reports, now);
      }

      const want = new Map<string, Map<string, string>>();
      for (const r of desiredRows) {
        if (!want.has(r.device_id)) want.set(r.device_id, new Map());
        want.get(r.device_id)!.set(r.component, r.version);
      }
      const answers: Array<CheckinAnswer | Error> = [];
      for (const p of batch) {
        const dev = byHash.get(p.tokenHash);
        if (!dev) {
          answers.push(new HttpError(401, 'unknown device token'));
          continue;
        }
        const err = refused.get(p);
        if (err) {
          answers.push(err);
          continue;
        }
        const wants = new Map(want.get(dev.id) ?? []);
        for (const [component, version] of Object.entries(JSON.parse(dev.pins) as Record<string, string>)) {
          wants.set(component, version); // operator pins win over rollouts
        }
        const current = new Map(p.body.components.map((c) => [c.name, c.version ?? null]));
        const desired: DesiredRelease[] = [];
        for (const [component, version] of wants) {
          if (dev.held === 1 && current.get(component) !== version) continue; // a hold freezes the device as it is
          const artifacts = await this.artifacts(tx, component, version);
          if (artifacts) desired.push({ component, version, artifacts });
        }
        answers.push({ device_id: dev.id, desired });
      }
      return answers;
    });
  }
}
