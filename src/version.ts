// The Ringfence version, kept apart so light processes (the agent) need not load the server to know it.
export const VERSION = '0.1.0';
