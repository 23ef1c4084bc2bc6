// Small shared pieces: status badges, error banners, number tiles and the confirm dialog.
import { type ReactNode, useState } from 'react';

const TONE: Record<string, string> = {
  running: 'info',
  pending: 'info',
  baking: 'info',
  'awaiting-approval': 'warn',
  paused: 'warn',
  halted: 'bad',
  'rolling-back': 'bad',
  'rolled-back': 'bad',
  aborted: 'muted',
  completed: 'good',
};

export function Status({ status }: { status: string }) {
  return <span className={`badge ${TONE[status] ?? 'muted'}`}>{status}</span>;
}

/** An error line; a refusal by role (403, "Not allowed: …") is marked as such. */
export function ErrorBanner({ error, id }: { error: string | null; id?: string }) {
  if (!error) return null;
  return (
    <div className={error.startsWith('Not allowed:') ? 'error forbidden' : 'error'} role="alert" id={id}>
      {error}
    </div>
  );
}

export function Stat({
  id,
  label,
  value,
  tone,
}: {
  id: string;
  label: string;
  value: ReactNode;
  tone?: string;
}) {
  return (
    <div className={`stat ${tone ?? ''}`}>
      <div className="stat-value" id={id}>
        {value}
      </div>
      <div className="stat-label">{label}</div>
    </div>
  );
}

export interface ConfirmRequest {
  title: string;
  body: string;
  action: string;
  /** Asks for a reason, recorded in the audit log ('required': the server refuses the action without one). */
  reason?: boolean | 'required';
  run: (reason: string) => Promise<void>;
}

/** A modal confirmation for actions that cannot be taken back (abort, rollback, stop all). */
export function ConfirmDialog({ req, onClose }: { req: ConfirmRequest; onClose: () => void }) {
  const [reason, setReason] = useState('');
  const [busy, setBusy] = useState(false);
  return (
    <div className="backdrop">
      <div className="dialog" role="dialog" aria-modal="true" aria-labelledby="dialog-title">
        <h2 id="dialog-title">{req.title}</h2>
        <p>{req.body}</p>
        {req.reason && (
          <label>
            Reason (recorded in the audit log)
            <input
              name="reason"
              value={reason}
              onChange={(e) => setReason(e.target.value)}
              maxLength={1000}
              placeholder={req.reason === 'required' ? 'required' : 'optional'}
              required={req.reason === 'required'}
            />
          </label>
        )}
        <div className="dialog-buttons">
          <button type="button" onClick={onClose} disabled={busy}>
            Cancel
          </button>
          <button
            type="button"
            className="danger"
            disabled={busy || (req.reason === 'required' && !reason.trim())}
            onClick={async () => {
              setBusy(true);
              try {
                await req.run(reason.trim());
              } finally {
                onClose();
              }
            }}
          >
            {req.action}
          </button>
        </div>
      </div>
    </div>
  );
}

export function time(at: number | null): string {
  return at === null ? '—' : new Date(at).toLocaleString();
}

/** A table's header row. */
export function TableHead({ columns }: { columns: string[] }) {
  return (
    <thead>
      <tr>
        {columns.map((c) => (
          <th key={c}>{c}</th>
        ))}
      </tr>
    </thead>
  );
}

/**
 * The buttons to the page before and after an offset-paged answer (`offset` is the one asked for, `size` rows
 * a page), around "first–last of total"; `id` names the count.
 */
export function Pager({
  id,
  page,
  shown,
  offset,
  size,
  onOffset,
  labels: [back, forward],
}: {
  id: string;
  page: { offset: number; total: number; next_offset: number | null };
  shown: number;
  offset: number;
  size: number;
  onOffset: (offset: number) => void;
  labels: [string, string];
}) {
  return (
    <div className="pager">
      <button type="button" disabled={offset === 0} onClick={() => onOffset(Math.max(0, offset - size))}>
        {back}
      </button>
      <span className="muted" id={id}>
        {shown ? `${page.offset + 1}–${page.offset + shown}` : 'none'} of {page.total}
      </span>
      <button
        type="button"
        disabled={page.next_offset === null}
        onClick={() => onOffset(page.next_offset ?? offset)}
      >
        {forward}
      </button>
    </div>
  );
}
