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
