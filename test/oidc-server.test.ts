// Single sign-on, server side, end to end against a real OpenID provider (oidc-provider on loopback,
// test/helpers/oidc.ts) and a real Ringfence server: the dashboard's code flow driven in Chromium from
// /v1/auth/oidc/login through the provider's pages back to the dashboard with `#token=…`, whose token works as
// alice/approver (actor alice/oidc); a user with no mapped group and a local operator's name are refused with
// nothing created; POST /v1/auth/oidc/exchange takes a real device-flow ID token and refuses a forged one, one for
// another audience and an expired one; the audit log records operator.login, never a token.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { generateKeyPair, SignJWT } from 'jose';
import * as client from 'openid-client';
import pino from 'pino';
import type { Browser, Page } from 'playwright-core';
import { createServer, type RunningServer } from '../src/server/app.ts';
import type { OidcOptions } from '../src/server/config.ts';
import { launchChromium, NO_CHROMIUM } from './helpers/browser.ts';
import {
  completeLogin,
  offline,
  oidcOptions,
  type RunningIdp,
  startIdp,
  verifyDevice,
} from './helpers/oidc.ts';
import { callAs } from './helpers/server.ts';

interface Srv {
  srv: RunningServer;
  url: string;
  admin: string;
  close(): Promise<void>;
}

/** A free loopback port (the IdP must know the server's callback before the server starts). */
async function freePort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A Ringfence server with single sign-on on `port` (0: any). */
async function startServer(oidc: OidcOptions, port = 0, clock?: () => number): Promise<Srv> {
  const dir = mkdtempSync(join(tmpdir(), 'rf-oidc-'));
  const srv = await createServer({
    dataDir: join(dir, 'server'),
    logger: pino({ level: 'silent' }),
    pollSeconds: 1,
    tickMs: 50,
    oidc,
    clock,
  });
  const url = await srv.app.listen({ host: '127.0.0.1', port });
  return {
    srv,
    url,
    admin: srv.newAdminToken as string,
    async close() {
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const ACCOUNTS: Record<string, string[]> = {
  alice: ['staff', 'ringfence-approvers'],
  vera: ['ringfence-viewers'],
  bob: ['staff'],
  lars: ['ringfence-admins'],
};

interface AuditRow {
  actor: string;
  action: string;
  subject: string;
  detail: Record<string, unknown>;
}

describe('single sign-on (server, real OpenID provider)', { skip: NO_CHROMIUM }, () => {
  let idp: RunningIdp;
  let main: Srv;
  let browser: Browser;

  before(async () => {
    const port = await freePort();
    const callback = `http://127.0.0.1:${port}/v1/auth/oidc/callback`;
    idp = await startIdp({ accounts: ACCOUNTS, redirectUris: [callback] });
    main = await startServer(oidcOptions(idp.issuer, callback), port);
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await main?.close();
    await idp?.stop();
  });

  /**
   * The dashboard's sign-in in a fresh browser context (no IdP session): from /v1/auth/oidc/login through the
   * provider's pages; returns the fragment of the dashboard URL the browser lands on.
   */
  async function dashboardLogin(login: string): Promise<URLSearchParams> {
    const context = await browser.newContext();
    const page: Page = await context.newPage();
    try {
      await offline(page);
      const origin = new URL(main.url).origin;
      // The URL the browser lands on, as committed (the dashboard removes the fragment right after loading).
      let landed: URL | null = null;
      page.on('framenavigated', (f) => {
        const u = new URL(f.url());
        if (f === page.mainFrame() && u.origin === origin && u.hash.length > 1) landed ??= u;
      });
      const callbackAnswer = page.waitForResponse(
        (r) => new URL(r.url()).pathname === '/v1/auth/oidc/callback',
      );
      await page.goto(new URL('/v1/auth/oidc/login', main.url).href);
      await completeLogin(page, login);
      const answer = await callbackAnswer;
      assert.equal(answer.status(), 302);
      await page.waitForURL((u) => u.origin === origin && u.pathname === '/');
      const final = landed as URL | null;
      assert.ok(final, 'landed on the dashboard with a fragment');
      assert.equal(final.pathname, '/');
      assert.equal(final.hash, new URL(answer.headers().location ?? '', origin).hash);
      return new URLSearchParams(final.hash.slice(1));
    } finally {
      await context.close();
    }
  }

  async function audit(): Promise<AuditRow[]> {
    const r = await callAs(main.url, 'GET', '/v1/admin/audit?limit=1000', main.admin);
    assert.equal(r.status, 200);
    return r.body as unknown as AuditRow[];
  }

  async function operators(): Promise<Array<{ name: string; role: string; created_by: string }>> {
    const r = await callAs(main.url, 'GET', '/v1/admin/operators', main.admin);
    return r.body.operators as Array<{ name: string; role: string; created_by: string }>;
  }

  it('says single sign-on is on, without a token', async () => {
    const r = await callAs(main.url, 'GET', '/v1/auth/oidc', null);
    assert.equal(r.status, 200);
    assert.equal(r.body.enabled, true);
    assert.equal(r.body.issuer, idp.issuer);
    assert.equal(r.body.client_id, 'ringfence');
    assert.equal(r.body.device_flow, true);
    assert.equal(r.body.dashboard, true);
    assert.equal(r.body.scope, 'openid profile groups');
    const doc = (await callAs(main.url, 'GET', '/v1/openapi.json', null)).body as { paths: object };
    for (const p of [
      '/v1/auth/oidc',
      '/v1/auth/oidc/login',
      '/v1/auth/oidc/callback',
      '/v1/auth/oidc/exchange',
    ])
      assert.ok(p in doc.paths, `${p} in OpenAPI`);
  });

  it('signs alice in through the dashboard code flow as an approver (actor alice/oidc)', async () => {
    const fragment = await dashboardLogin('alice');
    const token = fragment.get('token');
    assert.ok(token, `token in the fragment: ${fragment}`);
    const who = await callAs(main.url, 'GET', '/v1/admin/whoami', token);
    assert.equal(who.status, 200);
    assert.equal(who.body.name, 'alice');
    assert.equal(who.body.role, 'approver');
    assert.equal(who.body.token, 'oidc');
    assert.equal(who.body.actor, 'alice/oidc');
    // An approver may not operate: the role is enforced like any other operator's.
    const op = await callAs(main.url, 'POST', '/v1/admin/fleet/hold', token, {
      selector: '*',
      allow_empty: true,
    });
    assert.equal(op.status, 403);
    const alice = (await operators()).find((o) => o.name === 'alice');
    assert.equal(alice?.created_by, 'oidc');
    const entries = await audit();
    const login = entries.find((e) => e.action === 'operator.login' && e.subject === 'operator/alice');
    assert.ok(login, 'operator.login audited');
    assert.equal(login.actor, 'alice/oidc');
    assert.equal(login.detail.issuer, idp.issuer);
    assert.equal(login.detail.subject, 'alice');
    assert.equal(login.detail.role, 'approver');
    assert.ok(!JSON.stringify(entries).includes(token), 'no token in the audit log');
    // The session expires after session_hours.
    const list = await callAs(main.url, 'GET', '/v1/admin/operators', main.admin);
    const ops = list.body.operators as Array<{
      name: string;
      tokens: Array<{ name: string; expires_at: number }>;
    }>;
    const t = ops.find((o) => o.name === 'alice')?.tokens.find((x) => x.name === 'oidc');
    assert.ok(t && Math.abs(t.expires_at - (Date.now() + 8 * 3_600_000)) < 120_000, 'expires in 8 hours');
  });

  it('follows the IdP on a later login: a new role is set and audited', async () => {
    ACCOUNTS.vera = ['ringfence-viewers'];
    const first = (await dashboardLogin('vera')).get('token');
    assert.equal((await callAs(main.url, 'GET', '/v1/admin/whoami', first)).body.role, 'viewer');
    ACCOUNTS.vera = ['ringfence-operators'];
    const second = (await dashboardLogin('vera')).get('token');
    assert.notEqual(second, first, 'each session its own token');
    assert.equal((await callAs(main.url, 'GET', '/v1/admin/whoami', second)).body.role, 'operator');
    const changed = (await audit()).find(
      (e) => e.action === 'operator.role-changed' && e.subject === 'operator/vera',
    );
    assert.deepEqual(changed?.detail, { from: 'viewer', to: 'operator' });
  });

  it('refuses a user with no mapped group, creating nothing', async () => {
    const before = (await audit()).length;
    const fragment = await dashboardLogin('bob');
    assert.equal(fragment.get('token'), null);
    assert.equal(fragment.get('sso_error'), 'no Ringfence role for bob (claim groups: staff)');
    assert.equal(
      (await operators()).find((o) => o.name === 'bob'),
      undefined,
    );
    assert.equal((await audit()).length, before, 'nothing audited');
  });

  it("refuses to take over a local operator's name", async () => {
    const add = await callAs(main.url, 'POST', '/v1/admin/operators', main.admin, {
      name: 'lars',
      role: 'viewer',
    });
    assert.equal(add.status, 201);
    const before = (await audit()).length;
    const fragment = await dashboardLogin('lars');
    assert.equal(fragment.get('sso_error'), 'operator lars exists locally; SSO may not take it over');
    const lars = (await operators()).find((o) => o.name === 'lars');
    assert.equal(lars?.role, 'viewer', 'still the local viewer');
    assert.equal((await audit()).length, before);
  });

  it('refuses a callback whose state it did not issue', async () => {
    const res = await fetch(new URL('/v1/auth/oidc/callback?code=abc&state=made-up', main.url), {
      redirect: 'manual',
    });
    assert.equal(res.status, 302);
    const loc = res.headers.get('location') ?? '';
    assert.match(decodeURIComponent(loc), /^\/#sso_error=this sign-in is unknown or expired; start again$/);
  });

  describe('POST /v1/auth/oidc/exchange', () => {
    let idToken: string;
    let skew = 0;
    let skewed: Srv;
    let otherAudience: Srv;

    before(async () => {
      const config = await client.discovery(new URL(idp.issuer), 'ringfence', undefined, client.None(), {
        execute: [client.allowInsecureRequests],
      });
      const device = await client.initiateDeviceAuthorization(config, { scope: 'openid profile groups' });
      const polled = client.pollDeviceAuthorizationGrant(config, device);
      const context = await browser.newContext();
      try {
        await verifyDevice(await context.newPage(), device.verification_uri, device.user_code, 'alice');
      } finally {
        await context.close();
      }
      idToken = (await polled).id_token as string;
      const callback = `${main.url}/v1/auth/oidc/callback`;
      skewed = await startServer(oidcOptions(idp.issuer, callback), 0, () => Date.now() + skew);
      otherAudience = await startServer(oidcOptions(idp.issuer, callback, 'another-client'));
    });
    after(async () => {
      await skewed?.close();
      await otherAudience?.close();
    });

    const exchange = (s: Srv, token: string) =>
      callAs(s.url, 'POST', '/v1/auth/oidc/exchange', null, { id_token: token });

    it('trades a real ID token for an operator token', async () => {
      const r = await exchange(main, idToken);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.name, 'alice');
      assert.equal(r.body.role, 'approver');
      assert.ok(Number(r.body.expires_at) > Date.now());
      const who = await callAs(main.url, 'GET', '/v1/admin/whoami', String(r.body.token));
      assert.equal(who.body.actor, 'alice/oidc');
    });

    it('refuses an ID token for another audience', async () => {
      const r = await exchange(otherAudience, idToken);
      assert.equal(r.status, 401);
      assert.match(String(r.body.message), /^ID token refused: aud claim check failed/);
    });

    it('refuses an expired ID token, and one issued too long ago', async () => {
      skew = 2 * 3_600_000;
      const expired = await exchange(skewed, idToken);
      assert.equal(expired.status, 401);
      assert.equal(expired.body.message, 'ID token refused: expired');
      skew = 0;
      assert.equal((await exchange(skewed, idToken)).status, 200, 'the same token now');
    });

    it('refuses forged ID tokens: another key, an unknown key id, HS256, alg none', async () => {
      const jwks = (await (await fetch(`${idp.issuer}/jwks`)).json()) as { keys: Array<{ kid: string }> };
      const kid = jwks.keys[0].kid;
      const { privateKey } = await generateKeyPair('RS256');
      const claims = { sub: 'mallory', preferred_username: 'mallory', groups: ['ringfence-admins'] };
      const sign = (k: string) =>
        new SignJWT(claims)
          .setProtectedHeader({ alg: 'RS256', kid: k })
          .setIssuer(idp.issuer)
          .setAudience('ringfence')
          .setIssuedAt()
          .setExpirationTime('5m')
          .sign(privateKey);
      const hs = await new SignJWT(claims)
        .setProtectedHeader({ alg: 'HS256' })
        .setIssuer(idp.issuer)
        .setAudience('ringfence')
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(new TextEncoder().encode('a-shared-secret-of-thirty-two-bytes!'));
      const header = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const none = `${header({ alg: 'none' })}.${header({ ...claims, iss: idp.issuer, aud: 'ringfence', iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 300 })}.`;
      const before = (await audit()).length;
      const cases: Array<[string, string, RegExp]> = [
        ['another key, the real kid', await sign(kid), /signature does not verify/],
        ['another key, its own kid', await sign('not-published'), /does not publish/],
        ['HS256', hs, /algorithm not accepted/],
        ['alg none', none, /ID token refused/],
        ['not a JWT', 'garbage', /ID token refused/],
      ];
      for (const [what, token, why] of cases) {
        const r = await exchange(main, token);
        assert.equal(r.status, 401, `${what}: ${JSON.stringify(r.body)}`);
        assert.match(String(r.body.message), why, what);
      }
      assert.equal(
        (await operators()).find((o) => o.name === 'mallory'),
        undefined,
      );
      assert.equal((await audit()).length, before, 'nothing audited');
    });
  });
});
