// The states of a device in a rollout: a plain list with no imports, for the engine, the API schemas and the CLI.
/** Every state of a device in a rollout, in the order views list them. */
export const ASSIGNMENT_STATES = [
  'queued',
  'offered',
  'succeeded',
  'failed',
  'skipped',
  'reverting',
  'unconfirmed', // told to revert, but did not confirm before the deadline (it still gets the revert on return)
  'reverted',
] as const;

export type AssignmentState = (typeof ASSIGNMENT_STATES)[number];
