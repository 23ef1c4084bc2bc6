// Polling hook: loads now and then every intervalMs, never two requests at once; a 401 logs the operator out.
import { createContext, useCallback, useContext, useEffect, useRef, useState } from 'react';
import { ApiError } from './api.ts';

/** Set by the app: called when the server refuses the token, with the message to show on the login form. */
export const Unauthorized = createContext<(message: string) => void>(() => {});

export interface Polled<T> {
  data: T | null;
  error: string | null;
  refresh: () => void;
}

export function usePoll<T>(load: () => Promise<T>, key: string, intervalMs = 2000): Polled<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const onUnauthorized = useContext(Unauthorized);
  const busy = useRef(false);
  // Bumped whenever the key changes or the view unmounts: answers to an older generation are dropped.
  const generation = useRef(0);
  const loadRef = useRef(load);
  loadRef.current = load;

  const refresh = useCallback(async () => {
    if (busy.current) return;
    busy.current = true;
    const gen = generation.current;
    try {
      const v = await loadRef.current();
      if (gen !== generation.current) return;
      setData(v);
      setError(null);
    } catch (e) {
      if (gen !== generation.current) return;
      if (e instanceof ApiError && e.status === 401) onUnauthorized(e.message);
      else setError((e as Error).message);
    } finally {
      busy.current = false;
    }
  }, [onUnauthorized]);

  // biome-ignore lint/correctness/useExhaustiveDependencies: key names what is loaded; a new key starts afresh
  useEffect(() => {
    generation.current++;
    busy.current = false;
    setData(null);
    setError(null);
    void refresh();
    const t = setInterval(() => void refresh(), intervalMs);
    return () => {
      generation.current++;
      clearInterval(t);
    };
  }, [key, intervalMs, refresh]);

  return { data, error, refresh: () => void refresh() };
}
