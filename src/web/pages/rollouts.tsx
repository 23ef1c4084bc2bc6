// Rollouts: every rollout, newest first, and the releases they can be made of (with what awaits whose approval).
import { api } from '../api.ts';
import { usePoll } from '../poll.ts';
import { awaitingText } from '../session.tsx';
import type { Governance, RolloutView } from '../types.ts';
import { ErrorBanner, Status, time } from '../ui.tsx';
import { Releases } from './releases.tsx';
import { StopAll } from './stop-all.tsx';

export function RolloutsPage() {
  const p = usePoll(() => api<(RolloutView & Governance)[]>('GET', '/v1/admin/rollouts'), 'rollouts');
  const list = p.data ? [...p.data].reverse() : null;
  return (
    <section>
      <div className="title-row">
        <h1>Rollouts</h1>
        <StopAll onDone={p.refresh} />
      </div>
      <ErrorBanner error={p.error} />
      {!list ? (
        <p className="muted">Loading…</p>
      ) : list.length === 0 ? (
        <p className="muted">No rollout yet (ringfence rollout start NAME@V --plan PLAN).</p>
      ) : (
        <table id="rollouts">
          <thead>
            <tr>
              <th>#</th>
              <th>release</th>
              <th>plan</th>
              <th>status</th>
              <th>wave</th>
              <th className="num">exposed</th>
              <th>reason</th>
              <th>updated</th>
            </tr>
          </thead>
          <tbody>
            {list.map((r) => (
              <tr key={r.id} data-rollout={r.id}>
                <td>
                  <a href={`#/rollouts/${r.id}`}>{r.id}</a>
                </td>
                <td>
                  <a href={`#/rollouts/${r.id}`}>
                    {r.component}@{r.version}
                  </a>
                  {r.state.emergency && <span className="badge bad small">emergency</span>}
                  {r.channel && <span className="badge muted small">{r.channel}</span>}
                </td>
                <td>{r.plan}</td>
                <td>
                  <Status status={r.status} />
                </td>
                <td>{r.wave === null ? '—' : `${r.wave_index + 1}/${r.waves.length} ${r.wave}`}</td>
                <td className="num">{r.exposed}</td>
                <td className="reason">
                  {r.state.reason ?? ''}
                  {r.awaiting_approval && <div className="awaiting">{awaitingText(r.awaiting_approval)}</div>}
                </td>
                <td>{time(r.updated_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <Releases />
    </section>
  );
}
