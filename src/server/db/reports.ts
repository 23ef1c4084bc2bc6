// Table `reports`: Device transaction reports, keyed by transaction id (exactly-once).

export interface ReportTable {
  txn_id: string;
  device_id: string;
  component: string;
  version: string;
  outcome: string;
  reason: string | null;
  detail: string; // JSON
  received_at: number;
}
