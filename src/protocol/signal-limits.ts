// Limits of device signals (evidence gates), apart from the TypeBox schemas in device.ts: the agent checks its
// own samples against them without loading TypeBox (about 20 MB resident; docs/agent.md, "Memory").

/** Signal names: lower-case, like Prometheus metric names without colons. */
export const SIGNAL_NAME_RE = /^[a-z_][a-z0-9_]{0,63}$/;
/** Signals one component reports at most. */
export const MAX_SIGNALS = 16;
/** The largest magnitude of a value the server accepts. */
export const MAX_SIGNAL_MAGNITUDE = 1e15;
