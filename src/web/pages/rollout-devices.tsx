// A rollout's devices: wave, state, versions, failure class and reason, and under each failed device the output of
// its failing health checks. Filter by state; pages of PAGE devices; each device links to its own page.
import { Fragment, useState } from 'react';
import { api } from '../api.ts';
import { ChecksRow, visible } from '../checks.tsx';
import { ClassCell, ReasonCell, StateCell, WaveCell } from '../device-cells.tsx';
import { usePoll } from '../poll.ts';
import type { RolloutDevicesPage } from '../types.ts';
import { ErrorBanner, Pager, TableHead, time } from '../ui.tsx';

const PAGE = 50;
const COLUMNS = ['device', 'wave', 'state', 'from → to', 'class', 'reason', 'reported'];
/** The assignment states, in the order a device goes through them. */
export const STATES = [
  'queued',
  'offered',
  'succeeded',
  'failed',
  'reverting',
  'unconfirmed',
  'reverted',
  'skipped',
] as const;

export function deviceHref(id: string): string {
  return `#/devices/${encodeURIComponent(id)}`;
}

export function RolloutDevices({ id }: { id: number }) {
  const [state, setState] = useState('');
  const [offset, setOffset] = useState(0);
  const qs = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
  if (state) qs.set('state', state);
  const p = usePoll(
    () => api<RolloutDevicesPage>('GET', `/v1/admin/rollouts/${id}/devices?${qs}`),
    `rollout-devices-${id}-${qs}`,
  );
  const d = p.data;
  const all = d ? Object.values(d.states).reduce((a, b) => a + b, 0) : 0;
  return (
    <>
      <div className="title-row">
        <h2>Devices</h2>
        <label className="inline">
          state{' '}
          <select
            id="device-state"
            value={state}
            onChange={(e) => {
              setState(e.target.value);
              setOffset(0);
            }}
          >
            <option value="">all{d ? ` (${all})` : ''}</option>
            {STATES.map((s) => (
              <option key={s} value={s}>
                {s}
                {d ? ` (${d.states[s] ?? 0})` : ''}
              </option>
            ))}
          </select>
        </label>
      </div>
      <ErrorBanner error={p.error} />
      {!d ? (
        <p className="muted">Loading…</p>
      ) : d.total === 0 ? (
        <p className="muted" id="rollout-devices-empty">
          {state ? `No device is ${state}.` : 'No device selected yet.'}
        </p>
      ) : (
        <>
          <table id="rollout-devices">
            <TableHead columns={COLUMNS} />
            <tbody>
              {d.devices.map((x) => {
                const failed = x.report !== null && x.report.outcome !== 'succeeded';
                return (
                  <Fragment key={x.device_id}>
                    <tr
                      data-device={x.name}
                      data-state={x.state}
                      className={failed ? 'has-detail' : undefined}
                    >
                      <td>
                        <a href={deviceHref(x.device_id)}>{visible(x.name)}</a>
                        {x.retired && <span className="badge muted small">retired</span>}
                      </td>
                      <WaveCell wave={x.wave} />
                      <StateCell state={x.state} />
                      <td className="mono small">
                        {visible(x.from_version) || '—'} → {visible(x.to_version)}
                      </td>
                      <ClassCell failure={x.class} />
                      <ReasonCell reason={x.reason} />
                      <td>{time(x.reported_at)}</td>
                    </tr>
                    {failed && x.report && (
                      <ChecksRow of={x.name} columns={COLUMNS.length} report={x.report} />
                    )}
                  </Fragment>
                );
              })}
            </tbody>
          </table>
          <Pager
            id="rollout-devices-count"
            page={d}
            shown={d.devices.length}
            offset={offset}
            size={PAGE}
            onOffset={setOffset}
            labels={['Previous', 'Next']}
          />
        </>
      )}
    </>
  );
}
