// The kill switch: pauses every active rollout at once, after a confirmation and a reason (the audit log keeps it).
import { useState } from 'react';
import { ApiError, api } from '../api.ts';
import { RoleButton } from '../session.tsx';
import { ConfirmDialog, type ConfirmRequest } from '../ui.tsx';

export function StopAll({ onDone }: { onDone: () => void }) {
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const [result, setResult] = useState<string | null>(null);
  return (
    <>
      <RoleButton
        need="operate"
        what="stop all rollouts"
        className="danger"
        id="stop-all"
        onClick={() =>
          setConfirm({
            title: 'Stop all rollouts?',
            body: 'Every active rollout is paused at once. Devices keep what they have; nothing new is offered until each rollout is resumed.',
            action: 'Pause every rollout',
            reason: 'required',
            run: async (reason) => {
              try {
                const r = await api<{ paused: number[] }>('POST', '/v1/admin/rollouts/stop-all', { reason });
                setResult(
                  r.paused.length ? `Paused rollouts ${r.paused.join(', ')}.` : 'No active rollout to pause.',
                );
              } catch (e) {
                setResult(e instanceof ApiError ? e.message : String(e));
              }
              onDone();
            },
          })
        }
      >
        Stop all rollouts
      </RoleButton>
      {result && (
        <span className="note" role="status">
          {result}
        </span>
      )}
      {confirm && <ConfirmDialog req={confirm} onClose={() => setConfirm(null)} />}
    </>
  );
}
