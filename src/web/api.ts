// The dashboard's admin API client: the operator's token lives in sessionStorage (gone when the tab closes) and
// goes with every call as a bearer token; the server's {error, message} answers become ApiErrors with their status.
// The key keeps its old name so a tab signed in before operators existed stays signed in.
const KEY = 'ringfence.adminToken';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function savedToken(): string | null {
  return sessionStorage.getItem(KEY);
}

export function saveToken(token: string): void {
  sessionStorage.setItem(KEY, token);
}

export function forgetToken(): void {
  sessionStorage.removeItem(KEY);
}

/** What GET /v1/auth/oidc says about single sign-on on this server. */
export interface SsoInfo {
  enabled: boolean;
  issuer?: string;
  client_id?: string;
  device_flow?: boolean;
  dashboard?: boolean;
}

/** Where "Sign in with SSO" goes: the server redirects on to the identity provider. */
export const SSO_LOGIN_PATH = '/v1/auth/oidc/login';

/** Whether this server offers single sign-on (no token needed to ask); any failure counts as "no". */
export async function ssoInfo(): Promise<SsoInfo> {
  try {
    const res = await fetch('/v1/auth/oidc', { cache: 'no-store' });
    if (!res.ok) return { enabled: false };
    return (await res.json()) as SsoInfo;
  } catch {
    return { enabled: false };
  }
}

let ssoError: string | null = null;

function decodePart(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * The SSO callback lands on /#token=… or /#sso_error=… (a fragment: never sent to a server or logged). The
 * token is saved like a pasted one, the error kept for the login page, and the fragment removed from the address
 * bar and history at once, so the token is not left in the URL to be copied, bookmarked or reloaded.
 */
export function takeSsoFragment(): void {
  const m = /^#(token|sso_error)=([^&]*)/.exec(window.location.hash);
  if (!m) return;
  const value = decodePart(m[2]);
  if (m[1] === 'token' && value) {
    saveToken(value);
    ssoError = null;
  } else if (m[1] === 'sso_error') {
    // One line, whatever the URL held.
    ssoError = value.replace(/\s+/g, ' ').trim().slice(0, 300) || 'single sign-on failed';
    forgetToken();
  }
  window.history.replaceState(null, '', window.location.pathname + window.location.search);
}

/** The error the last SSO attempt came back with (once: a later look gets null). */
export function takeSsoError(): string | null {
  const e = ssoError;
  ssoError = null;
  return e;
}

// On load, before the shell reads the saved token: the shell then starts signed in (or on the login page).
takeSsoFragment();

export async function api<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  const token = savedToken() ?? '';
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (method === 'POST') headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: method === 'POST' ? JSON.stringify(body ?? {}) : undefined,
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, `server unreachable: ${(e as Error).message}`);
  }
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the raw text for the message below
  }
  if (!res.ok) {
    const msg = (parsed as { message?: string } | null)?.message ?? (text.slice(0, 200) || res.statusText);
    if (res.status === 401)
      throw new ApiError(
        401,
        `The operator token was refused (401: ${msg}). Paste a current operator token.`,
      );
    // The server's one-line reason ("role viewer may not approve releases (needs approver or admin)") as it is.
    if (res.status === 403) throw new ApiError(403, `Not allowed: ${msg}`);
    throw new ApiError(res.status, `${res.status}: ${msg}`);
  }
  return parsed as T;
}
