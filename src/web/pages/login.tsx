// Sign-in: an operator's token is pasted once and kept in this tab's sessionStorage only.
import { useState } from 'react';

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
        token is kept only in this browser tab (sessionStorage) and sent to this server with each API call.
      </p>
    </main>
  );
}
