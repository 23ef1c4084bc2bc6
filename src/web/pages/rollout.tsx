// One rollout: status, reason, per-wave progress, the operator's controls, and its devices.
import { useState } from 'react';
import { ApiError, api } from '../api.ts';
import { percent } from '../fleet-stats.ts';
import { usePoll } from '../poll.ts';
import { awaitingText, fourEyesBlocks, type Permission, RoleButton, useWhoami } from '../session.tsx';
import type { Governance, RolloutView } from '../types.ts';
import { ConfirmDialog, type ConfirmRequest, ErrorBanner, Status, time } from '../ui.tsx';
import { RolloutDevices } from './rollout-devices.tsx';

type Action = 'pause' | 'resume' | 'approve' | 'abort' | 'rollback';

/** The permission each button needs (the server's mapping) and how its tooltip says it. */
const NEEDS: Record<Action, [Permission, string]> = {
  pause: ['operate', 'pause rollouts'],
  resume: ['operate', 'resume rollouts'],
  approve: ['approve', 'approve waves'],
  abort: ['operate', 'abort rollouts'],
  rollback: ['operate', 'roll back rollouts'],
};

const FINISHED = new Set(['completed', 'aborted', 'rolled-back']);

/** Which buttons make sense now; the server still decides (its refusal is shown as an error). */
function allowed(r: RolloutView & Governance, a: Action): boolean {
  switch (a) {
    case 'pause':
      return ['pending', 'running', 'baking', 'awaiting-approval'].includes(r.status);
    case 'resume':
      return r.status === 'paused' || r.status === 'halted';
    case 'approve':
      return r.status === 'awaiting-approval';
    case 'abort':
      return !FINISHED.has(r.status);
    case 'rollback':
      return r.status !== 'rolled-back' && r.status !== 'rolling-back';
  }
}

export function RolloutPage({ id }: { id: number }) {
  const p = usePoll(() => api<RolloutView & Governance>('GET', `/v1/admin/rollouts/${id}`), `rollout-${id}`);
  const who = useWhoami();
  const [actionError, setActionError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const r = p.data;

  const act = async (a: Action, reason?: string) => {
    setBusy(true);
    setActionError(null);
    try {
      await api('POST', `/v1/admin/rollouts/${id}/${a}`, reason ? { reason } : {});
    } catch (e) {
      setActionError(e instanceof ApiError ? e.message : String(e));
    } finally {
      setBusy(false);
      p.refresh();
    }
  };

  const click = (a: Action) => {
    if (a === 'abort')
      setConfirm({
        title: `Abort rollout ${id}?`,
        body: 'Nothing more is offered. Devices that already have the release keep it (use rollback to take it back).',
        action: 'Abort rollout',
        reason: true,
        run: (reason) => act('abort', reason),
      });
    else if (a === 'rollback')
      setConfirm({
        title: `Roll back rollout ${id}?`,
        body: 'Every device that received this release is told to return to its previous version.',
        action: 'Roll back',
        reason: true,
        run: (reason) => act('rollback', reason),
      });
    else void act(a);
  };

  return (
    <section>
      <p>
        <a href="#/rollouts">← all rollouts</a>
      </p>
      <ErrorBanner error={p.error} />
      {!r ? (
        <p className="muted">Loading…</p>
      ) : (
        <>
          <div className="title-row">
            <h1>
              Rollout {r.id}: {r.component}@{r.version}
            </h1>
            <span id="rollout-status">
              <Status status={r.status} />
            </span>
          </div>
          <dl className="facts">
            <dt>plan</dt>
            <dd>{r.plan}</dd>
            <dt>current wave</dt>
            <dd id="rollout-wave">
              {r.wave === null ? 'not started' : `${r.wave_index + 1} of ${r.waves.length}: ${r.wave}`}
            </dd>
            <dt>exposed</dt>
            <dd id="rollout-exposed">{r.exposed} devices</dd>
            {r.channel && (
              <>
                <dt>channel</dt>
                <dd>{r.channel}</dd>
              </>
            )}
            {r.state.emergency && (
              <>
                <dt>emergency</dt>
                <dd>yes (shortened bake times)</dd>
              </>
            )}
            {r.state.bakeUntil !== null && r.status === 'baking' && (
              <>
                <dt>baking until</dt>
                <dd>{time(r.state.bakeUntil)}</dd>
              </>
            )}
            {r.awaiting_approval && (
              <>
                <dt>awaiting approval</dt>
                <dd id="rollout-awaiting">
                  {r.awaiting_approval.what}: <strong>{awaitingText(r.awaiting_approval)}</strong>
                </dd>
              </>
            )}
            <dt>reason</dt>
            <dd id="rollout-reason">{r.state.reason ?? '—'}</dd>
            <dt>started</dt>
            <dd>
              {time(r.created_at)}
              {r.started_by ? ` by ${r.started_by}` : ''}
            </dd>
            <dt>updated</dt>
            <dd>{time(r.updated_at)}</dd>
          </dl>
          <div className="actions">
            {(['pause', 'resume', 'approve'] as const).map((a) => (
              <RoleButton
                key={a}
                id={`btn-${a}`}
                need={NEEDS[a][0]}
                what={NEEDS[a][1]}
                blocked={a === 'approve' ? fourEyesBlocks(who, r.awaiting_approval) : null}
                disabled={busy || !allowed(r, a)}
                onClick={() => click(a)}
              >
                {a[0].toUpperCase() + a.slice(1)}
              </RoleButton>
            ))}
            {(['abort', 'rollback'] as const).map((a) => (
              <RoleButton
                key={a}
                id={`btn-${a}`}
                need={NEEDS[a][0]}
                what={NEEDS[a][1]}
                className="danger"
                disabled={busy || !allowed(r, a)}
                onClick={() => click(a)}
              >
                {a === 'abort' ? 'Abort' : 'Roll back'}
              </RoleButton>
            ))}
          </div>
          <ErrorBanner error={actionError} id="action-error" />
          <h2>Waves</h2>
          <table id="waves">
            <thead>
              <tr>
                <th>#</th>
                <th>wave</th>
                <th className="num">selected</th>
                <th className="num">offered</th>
                <th className="num">succeeded</th>
                <th className="num">failed</th>
                <th className="num" title="undone by the device itself">
                  rolled back
                </th>
                <th className="num" title="put back by the rollout, confirmed">
                  reverted
                </th>
                <th className="num" title="told to revert, not confirmed before the deadline">
                  unconfirmed
                </th>
                <th>progress</th>
              </tr>
            </thead>
            <tbody>
              {r.waves.map((w, i) => {
                const done = w.selected ? w.succeeded / w.selected : 0;
                const bad = w.selected ? (w.failed + w.reverted) / w.selected : 0;
                return (
                  <tr key={w.name} className={i === r.wave_index ? 'current' : undefined} data-wave={w.name}>
                    <td>{i + 1}</td>
                    <td>
                      {w.name}
                      {i === r.wave_index && <span className="badge info small">current</span>}
                    </td>
                    <td className="num n-selected">{w.selected}</td>
                    <td className="num n-offered">{w.offered}</td>
                    <td className="num n-succeeded">{w.succeeded}</td>
                    <td className={`num n-failed ${w.failed ? 'bad-text' : ''}`}>{w.failed}</td>
                    <td className={`num n-rolled-back ${w.rolled_back ? 'bad-text' : ''}`}>
                      {w.rolled_back}
                    </td>
                    <td className={`num n-reverted ${w.reverted ? 'bad-text' : ''}`}>{w.reverted}</td>
                    <td className={`num n-unconfirmed ${w.unconfirmed ? 'bad-text' : ''}`}>
                      {w.unconfirmed}
                    </td>
                    <td>
                      <div className="bar" title={`${percent(done)} succeeded`}>
                        <div className="bar-fill" style={{ width: `${done * 100}%` }} />
                        <div className="bar-bad" style={{ width: `${bad * 100}%` }} />
                      </div>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          <RolloutDevices id={id} />
          <p className="muted small">Refreshes every 2 seconds.</p>
        </>
      )}
      {confirm && <ConfirmDialog req={confirm} onClose={() => setConfirm(null)} />}
    </section>
  );
}
