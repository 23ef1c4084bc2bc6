// An explicit young-generation collection where the agent knows garbage piles up outside V8's heap (the socket
// buffers of a download): V8 would collect it anyway, but only after tens of MB (its external-memory limit), and
// a device pays for that garbage in resident memory (docs/agent.md, "Memory").
// `gc` is not exposed without --expose-gc: the flag is set at run time and `gc` taken from a new context,
// which is where V8 installs it; the agent's own context is left as it was. Unavailable: a no-op.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Gc = (o?: { type: 'minor' | 'major' }) => void;
let gcFn: Gc | null | undefined;

function gc(): Gc | null {
  if (gcFn === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      gcFn = runInNewContext('gc') as Gc;
    } catch {
      gcFn = null;
    }
  }
  return gcFn;
}

/** A young-generation collection (about a millisecond): frees the socket buffers a download has written. */
export function collectYoung(): void {
  gc()?.({ type: 'minor' });
}
