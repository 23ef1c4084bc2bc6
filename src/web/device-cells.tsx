// Table cells that a rollout's devices and a device's history and rollouts show alike. Versions, classes and
// reasons are device-written text: they go through `visible`.
import { visible } from './checks.tsx';

/** The wave, counted from 1, and its name. */
export function WaveCell({ wave }: { wave: { index: number; name: string | null } }) {
  return (
    <td>
      {wave.index + 1}: {wave.name ?? '?'}
    </td>
  );
}

/** An assignment state or a report's outcome. */
export function StateCell({ state }: { state: string }) {
  return (
    <td>
      <span className={`state ${state}`}>{state}</span>
    </td>
  );
}

/** The failure class, or a dash. */
export function ClassCell({ failure }: { failure: string | null }) {
  return <td className={failure ? 'bad-text' : 'muted'}>{failure ? visible(failure) : '—'}</td>;
}

/** Why, or a dash. */
export function ReasonCell({ reason }: { reason: string | null }) {
  return <td className="reason">{visible(reason) || '—'}</td>;
}
