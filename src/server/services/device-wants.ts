// What a device is told to run: "pins win, hold freezes" as one pure function.

/** The inputs: what rollouts want, the operator's pins and hold, and what the device runs now. */
export interface WantsInput {
  /** component → version from the `desired` rows (written by rollouts). */
  desired: ReadonlyMap<string, string>;
  /** component → version the operator pinned. */
  pins: Readonly<Record<string, string>>;
  held: boolean;
  /** component → version the device reported in this check-in (null: none installed). */
  current: ReadonlyMap<string, string | null>;
}

/**
 * component → version the device should run. Operator pins win over rollouts; a held device is frozen as it
 * is: only what it runs already stays desired, nothing new is offered.
 */
export function deviceWants(w: WantsInput): Map<string, string> {
  const wants = new Map(w.desired);
  for (const [component, version] of Object.entries(w.pins)) wants.set(component, version);
  if (w.held)
    for (const [component, version] of wants)
      if (w.current.get(component) !== version) wants.delete(component);
  return wants;
}
