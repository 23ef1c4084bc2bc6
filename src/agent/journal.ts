// The agent's journal: one JSON file per component plus an outbox of reports, each written atomically
// *before* the step it records takes effect, so recovery after a crash knows exactly where it stood.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicSync } from '../files/atomic-file.ts';
import type { Report as WireReport } from '../protocol/device.ts';
import type { TransactionFailureClass as FailureClass } from '../protocol/failure-class.ts';
import type { SlotRecord, SlotWait } from './fleet-lock.ts';

export type Phase =
  | 'downloading'
  | 'staged'
  | 'activating'
  | 'probation'
  | 'committed'
  | 'rolling-back'
  | 'rolled-back';
// A transaction's failure class and the report are the device protocol's own types (src/protocol/).
export type { TransactionFailureClass as FailureClass } from '../protocol/failure-class.ts';

export interface Transaction {
  id: string;
  version: string;
  from: string | null;
  phase: Phase;
  attempts: number; // starts of the agent (or boot guard) seen while activating/probation
  startedAt: number;
  failure: { class: FailureClass; reason: string } | null;
  offline?: boolean; // applied from an offline bundle: its report says so
  guardCounted?: boolean; // the boot guard counted this boot's attempt; the agent's next start does not
}

export interface ComponentJournal {
  component: string;
  current: string | null; // the committed, proven release
  previous: string | null; // the last good release before it
  quarantined: string[]; // releases rolled back here: never applied again automatically
  hold: boolean;
  pin: string | null;
  txn: Transaction | null;
  lastHealth: { ok: boolean; at: number; checks: HealthResult[] } | null;
  // The last release refused before staging (TUF verification or bad content); one report per distinct refusal.
  refused?: { version: string; class: string; reason: string; at: number } | null;
  // Reboot coordination (fleet-lock.ts): the FleetLock slot asked for or held, kept until it is given back,
  // and the staged transaction's wait for one.
  slot?: SlotRecord | null;
  slotWait?: SlotWait | null;
}

export interface HealthResult {
  name: string;
  ok: boolean;
  durationMs: number;
  output: string;
}

/** A report as the agent keeps it in its outbox: the wire report, always with its origin and time. */
export type Report = WireReport & { from_version: string | null; at: number };

/** Reports kept while the server does not acknowledge them (see Journal.enqueue). */
export const MAX_OUTBOX = 1000;

export interface Identity {
  device_id: string;
  device_token: string;
  server: string;
}

export class Journal {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  private file(component: string): string {
    return join(this.dir, `component-${component}.json`);
  }

  read(component: string): ComponentJournal {
    const f = this.file(component);
    if (!existsSync(f)) {
      return {
        component,
        current: null,
        previous: null,
        quarantined: [],
        hold: false,
        pin: null,
        txn: null,
        lastHealth: null,
      };
    }
    return JSON.parse(readFileSync(f, 'utf8')) as ComponentJournal;
  }

  write(j: ComponentJournal): void {
    writeFileAtomicSync(this.file(j.component), `${JSON.stringify(j, null, 2)}\n`);
  }

  outbox(): Report[] {
    const f = join(this.dir, 'outbox.json');
    return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as Report[]) : [];
  }

  setOutbox(reports: Report[]): void {
    writeFileAtomicSync(join(this.dir, 'outbox.json'), JSON.stringify(reports));
  }

  /**
   * Queues a report (replacing one with the same transaction id). The outbox is bounded: past MAX_OUTBOX the
   * oldest refusals are dropped first (a server that never acknowledges must not fill the disk); transaction
   * results are kept.
   */
  enqueue(r: Report): void {
    const next = [...this.outbox().filter((o) => o.txn_id !== r.txn_id), r];
    const drop = new Set<Report>();
    for (const o of next) {
      if (next.length - drop.size <= MAX_OUTBOX) break;
      if (o.outcome === 'refused' && o !== r) drop.add(o);
    }
    this.setOutbox(drop.size ? next.filter((o) => !drop.has(o)) : next);
  }

  identity(): Identity | null {
    const f = join(this.dir, 'identity.json');
    return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as Identity) : null;
  }

  setIdentity(id: Identity): void {
    writeFileAtomicSync(join(this.dir, 'identity.json'), JSON.stringify(id), 0o600);
  }
}
