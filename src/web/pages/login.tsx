// Sign-in: single sign-on through the server's OpenID provider when it offers it, or an operator's token pasted
// once. Either way the token is kept in this tab's sessionStorage only.
import { useEffect, useState } from 'react';
import { SSO_LOGIN_PATH, ssoInfo, takeSsoError } from '../api.ts';

/** "Sign in with SSO" when the server says the dashboard may use it, and the error an SSO attempt came back with. */
function SsoSignIn() {
  const [offered, setOffered] = useState(false);
  const [issuer, setIssuer] = useState<string | undefined>();
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    // Taken in an effect (not at render) so it is shown once, and not again after a later sign-out.
    const e = takeSsoError();
    if (e) setError(e);
    let live = true;
    void ssoInfo().then((i) => {
      if (!live) return;
      setOffered(i.enabled && i.dashboard === true);
      setIssuer(i.issuer);
    });
    return () => {
      live = false;
    };
  }, []);
  return (
    <>
      {error && (
        <div className="error" role="alert" id="sso-error">
          Single sign-on failed: {error}
        </div>
      )}
      {offered && (
        <div className="sso" style={{ display: 'flex', flexDirection: 'column', gap: '0.5rem' }}>
          <button
            type="button"
            className="primary"
            id="sso-login"
            title={issuer ? `through ${issuer}` : undefined}
            // A full navigation: the server redirects to the identity provider, which comes back to the server.
            onClick={() => window.location.assign(SSO_LOGIN_PATH)}
          >
            Sign in with SSO
          </button>
          <p className="muted small">or with an operator token:</p>
        </div>
      )}
    </>
  );
}

export function LoginPage({
  onLogin,
  error,
}: {
  onLogin: (token: string) => Promise<void>;
  error: string | null;
}) {
  const [token, setToken] = useState('');
  const [busy, setBusy] = useState(false);
  return (
    <main className="login">
      <h1>Ringfence</h1>
      <p className="muted">Patch server dashboard</p>
      <SsoSignIn />
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          if (!token.trim()) return;
          setBusy(true);
          await onLogin(token.trim());
          setBusy(false);
        }}
      >
        <label>
          Operator token
          <input
            name="token"
            type="password"
            autoComplete="off"
            value={token}
            onChange={(e) => setToken(e.target.value)}
            placeholder="rfop_…"
          />
        </label>
        <button type="submit" className="primary" disabled={busy || !token.trim()}>
          Sign in
        </button>
        {error && (
          <div className="error" role="alert" id="login-error">
            {error}
          </div>
        )}
      </form>
      <p className="muted small">
        Your operator token (from <code>ringfence operator add NAME --role …</code>, shown once; the first
        admin's token was printed when the server first started). What you may do depends on your role. The
        token is kept only in this browser tab (sessionStorage) and sent to this server with each API call; a
        single sign-on session's token expires by itself (after the hours the server allows).
      </p>
    </main>
  );
}
