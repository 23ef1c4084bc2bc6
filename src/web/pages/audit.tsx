// Audit: the latest entries of the hash-chained log, newest first, and whether the whole chain verifies.
import { api } from '../api.ts';
import { usePoll } from '../poll.ts';
import type { AuditEntry, AuditVerify } from '../types.ts';
import { ErrorBanner, time } from '../ui.tsx';

export function AuditPage() {
  const log = usePoll(() => api<AuditEntry[]>('GET', '/v1/admin/audit?limit=100'), 'audit', 5000);
  // Verifying walks the whole chain on the server: once on opening, and again on request.
  const v = usePoll(() => api<AuditVerify>('GET', '/v1/admin/audit/verify'), 'audit-verify', 60_000);
  return (
    <section>
      <div className="title-row">
        <h1>Audit log</h1>
        <button type="button" onClick={v.refresh}>
          Verify again
        </button>
      </div>
      <ErrorBanner error={v.error} />
      {v.data &&
        (v.data.ok ? (
          <div className="ok-banner" id="audit-verify">
            Hash chain intact: {v.data.entries} entries verified.
          </div>
        ) : (
          <div className="error" id="audit-verify" role="alert">
            Hash chain BROKEN at entry {v.data.brokenAt} (of {v.data.entries}): the log was altered.
          </div>
        ))}
      <ErrorBanner error={log.error} />
      {log.data && (
        <table id="audit">
          <thead>
            <tr>
              <th className="num">seq</th>
              <th>time</th>
              <th>actor</th>
              <th>action</th>
              <th>subject</th>
              <th>detail</th>
            </tr>
          </thead>
          <tbody>
            {[...log.data].reverse().map((e) => (
              <tr key={e.seq}>
                <td className="num">{e.seq}</td>
                <td>{time(e.at)}</td>
                <td>{e.actor}</td>
                <td className="mono">{e.action}</td>
                <td className="mono">{e.subject}</td>
                <td className="mono small detail" title={JSON.stringify(e.detail)}>
                  {JSON.stringify(e.detail)}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
