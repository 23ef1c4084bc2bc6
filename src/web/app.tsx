// The dashboard shell: login, who is signed in (whoami), navigation by URL hash (#/rollouts/3 survives a reload)
// and the pages.
import { type ReactElement, useCallback, useEffect, useState } from 'react';
import { ApiError, api, forgetToken, savedToken, saveToken } from './api.ts';
import { AuditPage } from './pages/audit.tsx';
import { DevicePage } from './pages/device.tsx';
import { FleetPage } from './pages/fleet.tsx';
import { LoginPage } from './pages/login.tsx';
import { OverviewPage } from './pages/overview.tsx';
import { RolloutPage } from './pages/rollout.tsx';
import { RolloutsPage } from './pages/rollouts.tsx';
import { Unauthorized } from './poll.ts';
import { Session, type Whoami } from './session.tsx';
import { ErrorBanner } from './ui.tsx';

// A role changed or revoked by an admin shows within this long (a revoked token is also refused by any call).
const WHOAMI_REFRESH_MS = 10_000;

function useHash(): string {
  const [hash, setHash] = useState(() => window.location.hash);
  useEffect(() => {
    const on = () => setHash(window.location.hash);
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return hash;
}

const NAV = [
  ['#/', 'Overview'],
  ['#/rollouts', 'Rollouts'],
  ['#/fleet', 'Fleet'],
  ['#/audit', 'Audit'],
] as const;

/** A device id from the URL; a malformed escape is kept as typed (the server then answers 404). */
function decodeHashPart(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export function App() {
  const [token, setToken] = useState(savedToken);
  const [who, setWho] = useState<Whoami | null>(null);
  const [loginError, setLoginError] = useState<string | null>(null);
  const [sessionError, setSessionError] = useState<string | null>(null);
  const hash = useHash();
  const path = hash.replace(/^#/, '') || '/';

  const logout = useCallback((message: string | null) => {
    forgetToken();
    setToken(null);
    setWho(null);
    setLoginError(message);
  }, []);
  const onUnauthorized = useCallback((message: string) => logout(message), [logout]);

  // Who the token belongs to, now (a reload keeps the token, not the answer) and every few seconds after.
  useEffect(() => {
    if (!token) return;
    let live = true;
    const load = async () => {
      try {
        const w = await api<Whoami>('GET', '/v1/admin/whoami');
        if (!live) return;
        setWho(w);
        setSessionError(null);
      } catch (e) {
        if (!live) return;
        if (e instanceof ApiError && e.status === 401) logout(e.message);
        else setSessionError((e as Error).message);
      }
    };
    void load();
    const t = setInterval(() => void load(), WHOAMI_REFRESH_MS);
    return () => {
      live = false;
      clearInterval(t);
    };
  }, [token, logout]);

  const login = async (t: string) => {
    saveToken(t);
    try {
      // whoami tells whether the token is good, and whose it is, before the pages start polling.
      setWho(await api<Whoami>('GET', '/v1/admin/whoami'));
      setLoginError(null);
      setToken(t);
    } catch (e) {
      forgetToken();
      setLoginError(
        e instanceof ApiError && e.status === 401 ? e.message : `Could not sign in: ${(e as Error).message}`,
      );
    }
  };

  if (!token) return <LoginPage onLogin={login} error={loginError} />;
  if (!who)
    return (
      <main className="login">
        <p className="muted">Signing in…</p>
        <ErrorBanner error={sessionError} />
        <button type="button" onClick={() => logout(null)}>
          Sign out
        </button>
      </main>
    );

  const rollout = /^\/rollouts\/(\d+)$/.exec(path);
  const device = /^\/devices\/([^/]+)$/.exec(path);
  let page: ReactElement;
  if (rollout) page = <RolloutPage id={Number(rollout[1])} />;
  else if (device) page = <DevicePage id={decodeHashPart(device[1])} />;
  else if (path === '/rollouts') page = <RolloutsPage />;
  else if (path === '/fleet') page = <FleetPage />;
  else if (path === '/audit') page = <AuditPage />;
  else page = <OverviewPage />;
  const section = rollout ? '#/rollouts' : device ? '#/fleet' : `#${path}`;

  return (
    <Session.Provider value={who}>
      <Unauthorized.Provider value={onUnauthorized}>
        <header className="top">
          <span className="brand">Ringfence</span>
          <nav>
            {NAV.map(([href, label]) => (
              <a key={href} href={href} className={section === href ? 'current' : undefined}>
                {label}
              </a>
            ))}
          </nav>
          <span
            className="who"
            id="whoami"
            title={`token ${who.token}; the audit log names you ${who.actor}`}
          >
            <span id="whoami-name">{who.name}</span>
            <span className={`badge role role-${who.role}`} id="whoami-role">
              {who.role}
            </span>
          </span>
          <button type="button" className="link" onClick={() => logout(null)}>
            Sign out
          </button>
        </header>
        <main>{page}</main>
      </Unauthorized.Provider>
    </Session.Provider>
  );
}
