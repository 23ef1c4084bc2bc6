// Releases: who imported each, whether it is approved, and for one awaiting approval who may not approve it
// (four eyes), with the Approve button for those whose role may.
import { useState } from 'react';
import { ApiError, api } from '../api.ts';
import { usePoll } from '../poll.ts';
import { type AwaitingApproval, awaitingText, fourEyesBlocks, RoleButton, useWhoami } from '../session.tsx';
import type { Governance, ReleaseView } from '../types.ts';
import { ErrorBanner, time } from '../ui.tsx';

type Release = ReleaseView & Governance;

/** What awaits approval: the server's answer, or (a server from before) nothing once approved. */
function awaiting(r: Release): AwaitingApproval | null {
  if (r.approved) return null;
  return r.awaiting_approval ?? { what: `${r.component}@${r.version}`, by_anyone_but: r.imported_by ?? null };
}

export function Releases() {
  const rel = usePoll(() => api<Release[]>('GET', '/v1/admin/releases'), 'releases', 5_000);
  const who = useWhoami();
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);

  const approve = async (ref: string) => {
    setBusy(ref);
    setError(null);
    setDone(null);
    try {
      await api('POST', `/v1/admin/releases/${encodeURIComponent(ref)}/approve`, {});
      setDone(`Approved ${ref}.`);
    } catch (e) {
      setError(e instanceof ApiError ? e.message : String(e));
    } finally {
      setBusy(null);
      rel.refresh();
    }
  };

  return (
    <>
      <h2>Releases</h2>
      <ErrorBanner error={rel.error} />
      <ErrorBanner error={error} id="release-error" />
      {done && (
        <div className="ok-banner" role="status" id="release-done">
          {done}
        </div>
      )}
      {rel.data && rel.data.length === 0 && <p className="muted">No release imported yet.</p>}
      {rel.data && rel.data.length > 0 && (
        <table id="releases">
          <thead>
            <tr>
              <th>release</th>
              <th className="num">artifacts</th>
              <th>imported</th>
              <th>approved</th>
            </tr>
          </thead>
          <tbody>
            {[...rel.data].reverse().map((r) => {
              const ref = `${r.component}@${r.version}`;
              const waiting = awaiting(r);
              return (
                <tr key={ref} data-release={ref}>
                  <td>{ref}</td>
                  <td className="num">{r.artifacts.length}</td>
                  <td>
                    {time(r.created_at)}
                    {r.imported_by ? ` by ${r.imported_by}` : ''}
                  </td>
                  <td>
                    {!waiting ? (
                      `${time(r.approved_at)} by ${r.approved_by ?? '?'}`
                    ) : (
                      <span className="awaiting-cell">
                        <span className="badge warn">not approved</span>{' '}
                        <span className="awaiting">{awaitingText(waiting)}</span>{' '}
                        <RoleButton
                          className="small-button"
                          need="approve"
                          what="approve releases"
                          blocked={fourEyesBlocks(who, waiting)}
                          disabled={busy !== null}
                          onClick={() => void approve(ref)}
                        >
                          Approve
                        </RoleButton>
                      </span>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </>
  );
}
