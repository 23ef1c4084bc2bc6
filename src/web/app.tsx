// The dashboard shell: login, navigation by URL hash (#/rollouts/3 survives a reload) and the pages.
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
  const [loginError, setLoginError] = useState<string | null>(null);
  const hash = useHash();
  const path = hash.replace(/^#/, '') || '/';

  const logout = useCallback((message: string | null) => {
    forgetToken();
    setToken(null);
    setLoginError(message);
  }, []);
  const onUnauthorized = useCallback((message: string) => logout(message), [logout]);

  const login = async (t: string) => {
    saveToken(t);
    try {
      // Any small admin read tells whether the token is good before the pages start polling.
      await api('GET', '/v1/admin/plans');
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
        <button type="button" className="link" onClick={() => logout(null)}>
          Sign out
        </button>
      </header>
      <main>{page}</main>
    </Unauthorized.Provider>
  );
}
