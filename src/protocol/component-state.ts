// A component's state as reported by a device: the open transaction's phase, separate from the device's
// local hold and pin. Older agents sent one mixed `state`; both forms map to the same `ComponentStatus`.
import { type ComponentReport, PHASES, type TransactionPhase } from './device.ts';

/** What the device said about one component, in the current form. */
export interface ComponentStatus {
  phase: TransactionPhase | null;
  hold: boolean;
  pinned: boolean;
}

/** The one-word state operators see (admin API, CLI): the phase while a transaction is open, else the control. */
export type ComponentState = TransactionPhase | 'held' | 'pinned' | 'idle';

/** Reads a component report in either form; an unknown legacy `state` counts as idle. */
export function componentStatus(c: ComponentReport): ComponentStatus {
  if (c.phase !== undefined || c.hold !== undefined || c.pin !== undefined)
    return { phase: c.phase ?? null, hold: c.hold === true, pinned: c.pin != null };
  const phase = PHASES.find((p) => p === c.state) ?? null;
  return { phase, hold: c.state === 'held', pinned: c.state === 'pinned' };
}

/** The one-word state for a status (a local hold shows before a pin, as agents always reported it). */
export function componentState(s: ComponentStatus): ComponentState {
  return s.phase ?? (s.hold ? 'held' : s.pinned ? 'pinned' : 'idle');
}
