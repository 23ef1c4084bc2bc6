// Test harness: a real server on a loopback port over a fresh SQLite database in a temp folder.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { Conn } from '../../src/cli/client.ts';
import { createServer, type RunningServer, type ServerOptions } from '../../src/server/app.ts';

export interface TestServer {
  srv: RunningServer;
  conn: Conn;
  url: string;
  dir: string;
  close(): Promise<void>;
}

export async function startTestServer(opts: Partial<ServerOptions> = {}): Promise<TestServer> {
  const dir = mkdtempSync(join(tmpdir(), 'rf-test-'));
  const srv = await createServer({
    dataDir: join(dir, 'server'),
    logger: pino({ level: 'silent' }),
    pollSeconds: 1,
    tickMs: 50,
    // Most tests act as one operator (the bootstrap admin imports and approves); four eyes has tests of its own
    // (four-eyes, web-roles, cli-operators), which pass `governance` themselves.
    ...opts,
    governance: { fourEyes: false, ...opts.governance },
  });
  const url = await srv.app.listen({ host: '127.0.0.1', port: 0 });
  return {
    srv,
    conn: { server: url, token: srv.newAdminToken! },
    url,
    dir,
    async close() {
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls every 100 ms until `ok` holds for fn's value, or the ceiling `ms` passes (then throws with the last
 * value). The ceiling is generous by default: a wait ends at its event, and a busy machine is slow.
 */
export async function until<T>(
  fn: () => Promise<T>,
  ok: (v: T) => boolean,
  ms = 120_000,
  what = 'condition',
): Promise<T> {
  const end = Date.now() + ms;
  let last: T = await fn();
  while (!ok(last)) {
    if (Date.now() > end)
      throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last).slice(0, 500)}`);
    await sleep(100);
    last = await fn();
  }
  return last;
}

/** An HTTP call as `token` (none: no Authorization header) with a JSON body; the status and the JSON answer. */
export async function callAs(
  url: string,
  method: string,
  path: string,
  token: string | null,
  body?: unknown,
): Promise<{ status: number; body: Record<string, unknown> & { message?: string } }> {
  const res = await fetch(new URL(path, url), {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = text ? JSON.parse(text) : {};
  } catch {} // not JSON (an HTML error page): the status says enough
  return { status: res.status, body: json };
}
