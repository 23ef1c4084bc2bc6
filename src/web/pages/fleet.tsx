// Fleet: every device with its labels, components and the operator's controls, narrowed by a text filter.
import { useState } from 'react';
import { api } from '../api.ts';
import { ago, isStale, matchesFilter } from '../fleet-stats.ts';
import { usePoll } from '../poll.ts';
import type { DeviceSummary } from '../types.ts';
import { ErrorBanner } from '../ui.tsx';
import { deviceHref } from './rollout-devices.tsx';

export function FleetPage() {
  const p = usePoll(() => api<DeviceSummary[]>('GET', '/v1/admin/devices'), 'devices', 5000);
  const [filter, setFilter] = useState('');
  const now = Date.now();
  const shown = p.data?.filter((d) => matchesFilter(d, filter)) ?? [];
  return (
    <section>
      <div className="title-row">
        <h1>Fleet</h1>
        <input
          id="fleet-filter"
          type="search"
          placeholder="filter: name, env=prod, sensor-content@2, held, failed…"
          value={filter}
          onChange={(e) => setFilter(e.target.value)}
        />
      </div>
      <ErrorBanner error={p.error} />
      {!p.data ? (
        <p className="muted">Loading…</p>
      ) : (
        <>
          <p className="muted" id="fleet-count">
            {shown.length} of {p.data.length} devices
          </p>
          <table id="devices">
            <thead>
              <tr>
                <th>name</th>
                <th>labels</th>
                <th>components</th>
                <th>quarantined</th>
                <th>held</th>
                <th>last seen</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((d) => {
                const quarantined = d.components.flatMap((c) => c.quarantined.map((v) => `${c.name}@${v}`));
                const stale = isStale(d, now);
                return (
                  <tr key={d.id} data-device={d.name}>
                    <td>
                      <div>
                        <a href={deviceHref(d.id)}>{d.name}</a>
                      </div>
                      <div className="muted small mono">{d.id}</div>
                    </td>
                    <td>
                      {Object.entries(d.labels).map(([k, v]) => (
                        <span key={k} className="chip">
                          {k}={v}
                        </span>
                      ))}
                      {d.channel !== 'general' && <span className="chip">channel={d.channel}</span>}
                    </td>
                    <td>
                      {d.components.length === 0 && <span className="muted">none reported</span>}
                      {d.components.map((c) => (
                        <div key={c.name} className="mono small">
                          {c.name}@{c.version ?? '—'} <span className={`state ${c.state}`}>{c.state}</span>
                          {d.pins[c.name] && <span className="chip">pinned {d.pins[c.name]}</span>}
                        </div>
                      ))}
                    </td>
                    <td className={quarantined.length ? 'bad-text mono small' : 'muted'}>
                      {quarantined.length ? quarantined.join(', ') : '—'}
                    </td>
                    <td>
                      {d.held ? <span className="badge warn">held</span> : <span className="muted">—</span>}
                      {d.deferred_until !== null && d.deferred_until > now && (
                        <span className="badge muted small">deferred</span>
                      )}
                    </td>
                    <td
                      className={stale ? 'warn-text' : undefined}
                      title={new Date(d.last_seen_at).toLocaleString()}
                    >
                      {ago(d.last_seen_at, now)}
                      {stale && ' (stale)'}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}
