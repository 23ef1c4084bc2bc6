// One device: labels, components, quarantined releases and the operator's controls, then its transactions across
// rollouts (newest first) with the health checks it reported, and the rollouts it is part of.
import { Fragment, useState } from 'react';
import { ApiError, api } from '../api.ts';
import { ChecksRow, visible } from '../checks.tsx';
import { ClassCell, ReasonCell, StateCell, WaveCell } from '../device-cells.tsx';
import { ago } from '../fleet-stats.ts';
import { usePoll } from '../poll.ts';
import type { DeviceHistoryPage, DeviceSummary } from '../types.ts';
import { ErrorBanner, Pager, TableHead, time } from '../ui.tsx';

const PAGE = 25;
const HISTORY_COLUMNS = ['received', 'rollout', 'release', 'outcome', 'class', 'reason'];

export function DevicePage({ id }: { id: string }) {
  const enc = encodeURIComponent(id);
  // A retired device is no longer in the fleet (404) but its history is kept: the page then shows that alone.
  const dev = usePoll(
    () =>
      api<DeviceSummary>('GET', `/v1/admin/devices/${enc}`).catch((e: unknown) => {
        if (e instanceof ApiError && e.status === 404) return null;
        throw e;
      }),
    `device-${id}`,
    5000,
  );
  const [offset, setOffset] = useState(0);
  const hist = usePoll(
    () => api<DeviceHistoryPage>('GET', `/v1/admin/devices/${enc}/history?limit=${PAGE}&offset=${offset}`),
    `device-history-${id}-${offset}`,
    5000,
  );
  const d = dev.data;
  const h = hist.data;
  const name = d?.name ?? h?.device.name ?? id;
  const labels = d?.labels ?? h?.device.labels ?? {};
  const now = Date.now();
  return (
    <section>
      <p>
        <a href="#/fleet">← fleet</a>
      </p>
      <div className="title-row">
        <h1 id="device-name">{visible(name)}</h1>
        {d?.held && <span className="badge warn">held</span>}
        {h?.device.retired_at !== null && h?.device.retired_at !== undefined && (
          <span className="badge muted">retired {time(h.device.retired_at)}</span>
        )}
      </div>
      <ErrorBanner error={dev.error ?? hist.error} />
      <dl className="facts" id="device-facts">
        <dt>id</dt>
        <dd className="mono">{visible(d?.id ?? h?.device.id ?? id)}</dd>
        <dt>labels</dt>
        <dd id="device-labels">
          {Object.keys(labels).length === 0 && <span className="muted">none</span>}
          {Object.entries(labels).map(([k, v]) => (
            <span key={k} className="chip">
              {visible(k)}={visible(v)}
            </span>
          ))}
        </dd>
        {d && (
          <>
            <dt>agent</dt>
            <dd>{visible(d.agent_version)}</dd>
            <dt>last seen</dt>
            <dd title={new Date(d.last_seen_at).toLocaleString()}>{ago(d.last_seen_at, now)}</dd>
            <dt>channel</dt>
            <dd>{d.channel}</dd>
            {d.deferred_until !== null && d.deferred_until > now && (
              <>
                <dt>deferred until</dt>
                <dd>{time(d.deferred_until)}</dd>
              </>
            )}
          </>
        )}
      </dl>
      {d && (
        <>
          <h2>Components</h2>
          <table id="device-components">
            <thead>
              <tr>
                <th>component</th>
                <th>version</th>
                <th>state</th>
                <th>last health</th>
                <th>quarantined</th>
                <th>pinned</th>
              </tr>
            </thead>
            <tbody>
              {d.components.length === 0 && (
                <tr>
                  <td colSpan={6} className="muted">
                    none reported
                  </td>
                </tr>
              )}
              {d.components.map((c) => {
                const health = c.health as { ok?: unknown; at?: unknown } | null;
                return (
                  <tr key={c.name} data-component={c.name}>
                    <td className="mono">{visible(c.name)}</td>
                    <td className="mono">{visible(c.version) || '—'}</td>
                    <td>
                      <span className={`state ${c.state}`}>{visible(c.state)}</span>
                    </td>
                    <td>
                      {health && typeof health.ok === 'boolean' ? (
                        <span className={`badge ${health.ok ? 'good' : 'bad'} small`}>
                          {health.ok ? 'ok' : 'failed'}
                        </span>
                      ) : (
                        <span className="muted">—</span>
                      )}
                      {health && typeof health.at === 'number' && (
                        <span className="muted small"> {time(health.at)}</span>
                      )}
                    </td>
                    <td className={c.quarantined.length ? 'bad-text mono small quarantined' : 'muted'}>
                      {c.quarantined.length ? c.quarantined.map((v) => visible(v)).join(', ') : '—'}
                    </td>
                    <td className="mono small">{d.pins[c.name] ? visible(d.pins[c.name]) : '—'}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </>
      )}
      <h2>History</h2>
      {!h ? (
        <p className="muted">Loading…</p>
      ) : h.total === 0 ? (
        <p className="muted">No transaction reported yet.</p>
      ) : (
        <>
          <table id="device-history">
            <TableHead columns={HISTORY_COLUMNS} />
            <tbody>
              {h.transactions.map((t) => (
                <Fragment key={t.txn_id}>
                  <tr data-txn={t.txn_id} data-outcome={t.outcome}>
                    <td>{time(t.received_at)}</td>
                    <td>
                      {t.rollout ? (
                        <>
                          <a href={`#/rollouts/${t.rollout.id}`}>#{t.rollout.id}</a>{' '}
                          <span className="muted small">
                            {t.kind}
                            {t.rollout.wave.name ? `, wave ${t.rollout.wave.name}` : ''}
                          </span>
                        </>
                      ) : (
                        <span className="muted">{t.offline ? 'offline bundle' : '—'}</span>
                      )}
                    </td>
                    <td className="mono small">
                      {visible(t.component)}@{visible(t.version)}
                    </td>
                    <StateCell state={t.outcome} />
                    <ClassCell failure={t.class} />
                    <ReasonCell reason={t.reason} />
                  </tr>
                  {(t.checks.length > 0 || t.detail_truncated) && (
                    <ChecksRow
                      of={t.txn_id}
                      columns={HISTORY_COLUMNS.length}
                      report={t}
                      all={t.outcome !== 'succeeded'}
                    />
                  )}
                </Fragment>
              ))}
            </tbody>
          </table>
          <Pager
            id="device-history-count"
            page={h}
            shown={h.transactions.length}
            offset={offset}
            size={PAGE}
            onOffset={setOffset}
            labels={['Newer', 'Older']}
          />
        </>
      )}
      {h && h.assignments.length > 0 && (
        <>
          <h2>Rollouts</h2>
          <table id="device-rollouts">
            <TableHead columns={['#', 'release', 'wave', 'state', 'from', 'reason', 'offered']} />
            <tbody>
              {h.assignments.map((a) => (
                <tr key={a.id} data-rollout={a.id}>
                  <td>
                    <a href={`#/rollouts/${a.id}`}>{a.id}</a>
                  </td>
                  <td className="mono small">
                    {visible(a.component)}@{visible(a.version)}
                  </td>
                  <WaveCell wave={a.wave} />
                  <StateCell state={a.state} />
                  <td className="mono small">{visible(a.from_version) || '—'}</td>
                  <ReasonCell reason={a.reason} />
                  <td>{time(a.offered_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}
