// Applying device reports inside the check-in transaction: each new report (by txn_id, exactly once) moves the
// device's assignments through the engine's pure `applyReport`, and failures stay in the audit trail.
import { applyReport, type DeviceOutcome } from '../../engine/rollout.ts';
import type { Report } from '../../protocol/device.ts';
import { classOnWire, type FailureClass, legacyClass } from '../../protocol/failure-class.ts';
import type { ServerContext } from '../context.ts';
import { releasesSeenByDevice, reportableAssignments, saveVerdict } from '../db/assignments.ts';
import { appendAudit } from '../db/audit.ts';
import type { Db } from '../db/database.ts';
import { devicePins } from '../db/devices.ts';
import { isApprovedRelease } from '../db/releases.ts';
import { insertReportOnce } from '../db/reports.ts';
import { nextAssignmentRev } from '../db/rollouts.ts';
import { boundedDetail } from '../limits.ts';
import { enqueueQuarantined } from './webhooks.ts';

/** The class of a report: its own, else (older agents) the class its `class: reason` text names. */
export function reportClass(r: Report): FailureClass {
  return r.class !== undefined ? classOnWire(r.class) : legacyClass(r.reason);
}

/**
 * The reason an assignment shows: `class: reason`, as operators have always read it (`failure:` when an older
 * agent gave no class). The class itself travels beside it; nothing decides on this text.
 */
export function assignmentReason(r: Report): string | null {
  if (r.reason) return `${r.class ?? 'failure'}: ${r.reason}`;
  return r.class ? `${r.class}: no reason given` : null;
}

/**
 * What the server ever offered this device, read once per check-in (two set-based reads, not one per report): a
 * rollout assigned the release (as its target, or as the version to revert to) or a pin names it. For an update
 * applied from an offline bundle, an approved release also counts. Reports for anything else are acknowledged
 * and dropped, so a device cannot fill the database with made-up transactions.
 */
class OfferedToDevice {
  private known: Set<string> | null = null;
  private readonly approved = new Map<string, boolean>();

  constructor(
    private readonly tx: Db,
    private readonly deviceId: string,
  ) {}

  /** True when the server offered (or approved, for offline updates) the release this report is about. */
  async has(r: Report): Promise<boolean> {
    const key = `${r.component}\u0000${r.version}`;
    if (!this.known) this.known = await this.load();
    if (this.known.has(key)) return true;
    if (r.offline !== true) return false;
    let ok = this.approved.get(key);
    if (ok === undefined) {
      ok = await isApprovedRelease(this.tx, r.component, r.version);
      this.approved.set(key, ok);
    }
    return ok;
  }

  private async load(): Promise<Set<string>> {
    const known = new Set<string>();
    for (const a of await releasesSeenByDevice(this.tx, this.deviceId)) {
      known.add(`${a.component}\u0000${a.version}`);
      if (a.fromVersion !== null) known.add(`${a.component}\u0000${a.fromVersion}`);
    }
    for (const [c, v] of Object.entries(await devicePins(this.tx, this.deviceId)))
      known.add(`${c}\u0000${v}`);
    return known;
  }
}

/** Moves the device's open assignments for the report's component by the engine's rule; marks rollouts dirty. */
async function applyToAssignments(tx: Db, deviceId: string, r: Report, now: number): Promise<void> {
  const rows = await reportableAssignments(tx, deviceId, r.component);
  const outcome: DeviceOutcome =
    r.outcome === 'succeeded' || r.outcome === 'rolled-back' ? r.outcome : 'failed';
  for (const row of rows) {
    const next = applyReport(row.assignment, {
      outcome,
      version: r.version,
      target: row.target,
      reason: assignmentReason(r),
      failureClass: outcome === 'succeeded' ? null : reportClass(r),
      at: now,
    });
    if (!next) continue;
    // The rollout has news, and its assignments a new revision (a server's kept copy reads what changed).
    await saveVerdict(tx, row.rolloutId, next, await nextAssignmentRev(tx, row.rolloutId, true));
  }
}

/** Applies device reports to the assignments of the rollouts they belong to (idempotent by txn_id). */
export function reportApplier(ctx: ServerContext) {
  const { guards, metrics } = ctx;
  /** Records, once per hour and device, that the device went over a quota. */
  const throttled = (tx: Db, deviceId: string, what: 'reports' | 'audit', now: number) =>
    appendAudit(tx, {
      at: now,
      actor: 'server',
      action: 'device.throttled',
      subject: `device/${deviceId}`,
      detail: {
        what,
        per_hour:
          what === 'reports' ? guards.limits.reportsPerDevicePerHour : guards.limits.auditPerDevicePerHour,
      },
    });

  /** Failures, refusals and every offline update stay in the audit trail, within the device's audit quota. */
  const audit = async (tx: Db, deviceId: string, r: Report, now: number) => {
    if (r.outcome === 'succeeded' && !r.offline) return;
    const aq = guards.audit.spend(deviceId);
    if (aq === 'ok')
      await appendAudit(tx, {
        at: now,
        actor: `device/${deviceId}`,
        action: `device.${r.outcome}`,
        subject: `device/${deviceId}`,
        detail: {
          component: r.component,
          version: r.version,
          class: r.class === undefined ? undefined : classOnWire(r.class),
          reason: r.reason,
          offline: r.offline,
        },
      });
    else {
      metrics.throttled.inc({ what: 'audit' });
      if (aq === 'first-over') await throttled(tx, deviceId, 'audit', now);
    }
  };

  return async function applyReports(
    tx: Db,
    deviceId: string,
    reports: Report[],
    now: number,
  ): Promise<number> {
    let applied = 0;
    const offered = new OfferedToDevice(tx, deviceId);
    for (const r of reports) {
      if (!(await offered.has(r))) {
        metrics.reportsDropped.inc({ reason: 'unoffered' });
        continue;
      }
      const quota = guards.reports.spend(deviceId);
      if (quota !== 'ok') {
        metrics.reportsDropped.inc({ reason: 'quota' });
        metrics.throttled.inc({ what: 'reports' });
        if (quota === 'first-over') await throttled(tx, deviceId, 'reports', now);
        continue;
      }
      const fresh = await insertReportOnce(tx, {
        txnId: r.txn_id,
        deviceId,
        component: r.component,
        version: r.version,
        outcome: r.outcome,
        reason: r.reason ?? null,
        detail: {
          class: r.class === undefined ? undefined : classOnWire(r.class),
          offline: r.offline ?? false,
          ...boundedDetail(r.detail, guards.limits.detailMaxBytes),
        },
        now,
      });
      if (!fresh) continue; // seen before: exactly once
      applied++;
      await applyToAssignments(tx, deviceId, r, now);
      await audit(tx, deviceId, r, now);
      // A device that rolled a release back quarantines it (agent/transaction.ts); announced in this transaction.
      if (r.outcome === 'rolled-back')
        await enqueueQuarantined(
          tx,
          deviceId,
          { ...r, reason: r.reason ?? null, class: r.class === undefined ? null : classOnWire(r.class) },
          now,
        );
    }
    return applied;
  };
}

/** Applies one device's reports inside the batch transaction. */
export type ReportApplier = ReturnType<typeof reportApplier>;
