// Overview: the fleet at a glance and every rollout that still owns devices, with its exposure.
import { api } from '../api.ts';
import { overview, percent, STALE_AFTER_MS } from '../fleet-stats.ts';
import { usePoll } from '../poll.ts';
import type { DeviceSummary, RolloutView } from '../types.ts';
import { ErrorBanner, Stat, Status } from '../ui.tsx';
import { StopAll } from './stop-all.tsx';

export function OverviewPage() {
  const p = usePoll(async () => {
    const [devices, rollouts] = await Promise.all([
      api<DeviceSummary[]>('GET', '/v1/admin/devices'),
      api<RolloutView[]>('GET', '/v1/admin/rollouts'),
    ]);
    return overview(devices, rollouts, Date.now());
  }, 'overview');
  const o = p.data;
  return (
    <section>
      <div className="title-row">
        <h1>Overview</h1>
        <StopAll onDone={p.refresh} />
      </div>
      <ErrorBanner error={p.error} />
      {!o ? (
        <p className="muted">Loading…</p>
      ) : (
        <>
          <div className="stats">
            <Stat id="kpi-fleet" label="devices in the fleet" value={o.fleet} />
            <Stat
              id="kpi-recent"
              label={`seen in the last ${STALE_AFTER_MS / 60_000} min`}
              value={o.recent}
              tone="good"
            />
            <Stat
              id="kpi-stale"
              label="stale (not seen recently)"
              value={o.stale}
              tone={o.stale ? 'warn' : ''}
            />
            <Stat id="kpi-held" label="held by an operator" value={o.held} tone={o.held ? 'warn' : ''} />
            <Stat
              id="kpi-quarantined"
              label="with a quarantined release"
              value={o.quarantined}
              tone={o.quarantined ? 'bad' : ''}
            />
            <Stat id="kpi-active" label="active rollouts" value={o.active.length} />
          </div>
          <h2>Active rollouts</h2>
          {o.active.length === 0 ? (
            <p className="muted">No rollout is active.</p>
          ) : (
            <table id="active-rollouts">
              <thead>
                <tr>
                  <th>#</th>
                  <th>release</th>
                  <th>status</th>
                  <th>wave</th>
                  <th className="num">exposed</th>
                  <th>blast radius</th>
                </tr>
              </thead>
              <tbody>
                {o.active.map((r) => (
                  <tr key={r.id} data-rollout={r.id}>
                    <td>
                      <a href={`#/rollouts/${r.id}`}>{r.id}</a>
                    </td>
                    <td>
                      <a href={`#/rollouts/${r.id}`}>{r.release}</a>
                    </td>
                    <td>
                      <Status status={r.status} />
                    </td>
                    <td>{r.wave ?? '—'}</td>
                    <td className="num n-exposed">{r.exposed}</td>
                    <td>
                      <div className="bar" title={`${r.exposed} of ${o.fleet} devices`}>
                        <div className="bar-fill" style={{ width: `${Math.min(100, r.share * 100)}%` }} />
                      </div>
                      <span className="share">{percent(r.share)} of the fleet</span>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </section>
  );
}
