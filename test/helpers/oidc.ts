// A real OpenID provider for the single sign-on tests: oidc-provider 9 (a devDependency, never shipped) on a free
// loopback port, plain HTTP, with its development login and consent pages (devInteractions) and the device
// authorization grant. Accounts are a table NAME → groups; any password is accepted (dev interactions).
//
// The client `ringfence` is PUBLIC (token_endpoint_auth_method `none`) unless `clientSecret` is given: the CLI's
// device flow runs on the operator's machine and cannot keep a secret, and the server's code flow is protected
// by PKCE (required here), state and nonce. One client serves both, so an ID token from either flow has the
// same audience (`ringfence`), which is what POST /v1/auth/oidc/exchange checks. With `clientSecret` the client
// is confidential (client_secret_basic) for both grants.
//
// ID tokens carry `preferred_username` and `groups` (conformIdTokenClaims: false): the server maps claims from
// the ID token itself, as the CLI presents only that.
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
// oidc-provider ships no type declarations; its constructor and callback() are all the tests use.
// @ts-expect-error -- untyped package
import ProviderModule from 'oidc-provider';
import type { Page } from 'playwright-core';
import type { OidcOptions } from '../../src/server/config.ts';

interface ProviderLike {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  on(event: string, fn: (...args: unknown[]) => void): void;
}
const Provider = ProviderModule as new (issuer: string, config: object) => ProviderLike;

export const IDP_CLIENT_ID = 'ringfence';

export interface IdpOptions {
  /** Login name → its groups (claim `groups`; `preferred_username` is the login name). */
  accounts: Record<string, string[]>;
  /** The client's redirect URIs (the server's /v1/auth/oidc/callback); none needed for the device flow only. */
  redirectUris?: string[];
  /** Makes `ringfence` a confidential client with this secret (default: public client). */
  clientSecret?: string;
  /** Extra claims per login name, merged over the defaults (e.g. a name claim that is not a valid name). */
  claims?: Record<string, Record<string, unknown>>;
}

export interface RunningIdp {
  /** The issuer URL, http://127.0.0.1:PORT (no trailing slash). */
  issuer: string;
  clientId: string;
  stop(): Promise<void>;
}

/** Starts oidc-provider on a free loopback port; `stop()` closes it (and its open connections). */
export async function startIdp(opts: IdpOptions): Promise<RunningIdp> {
  let handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.end();
  const server: Server = createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;
  const secret = opts.clientSecret;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: IDP_CLIENT_ID,
        ...(secret
          ? { client_secret: secret, token_endpoint_auth_method: 'client_secret_basic' }
          : { token_endpoint_auth_method: 'none' }),
        redirect_uris: opts.redirectUris ?? [],
        response_types: opts.redirectUris?.length ? ['code'] : [],
        grant_types: [
          ...(opts.redirectUris?.length ? ['authorization_code'] : []),
          'urn:ietf:params:oauth:grant-type:device_code',
        ],
      },
    ],
    async findAccount(_ctx: unknown, sub: string) {
      const groups = opts.accounts[sub];
      if (!groups) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, preferred_username: sub, groups, ...opts.claims?.[sub] };
        },
      };
    },
    claims: { openid: ['sub'], profile: ['preferred_username', 'name'], groups: ['groups'] },
    scopes: ['openid', 'profile', 'groups', 'offline_access'],
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: true }, deviceFlow: { enabled: true } },
    pkce: { required: () => true },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    // Short enough that an abandoned test does not matter, long enough for a slow machine.
    ttl: { DeviceCode: 600, Interaction: 600, Session: 600, Grant: 600, IdToken: 600, AccessToken: 600 },
  });
  // The provider logs expected refusals (bad codes, wrong clients) itself; the tests look at answers instead.
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error', err));
  handler = provider.callback();
  return {
    issuer,
    clientId: IDP_CLIENT_ID,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * The provider's dev pages load a web font from the internet; tests have none, so it is refused at once
 * instead of stalling page loads. Call before navigating (idempotent per page).
 */
export async function offline(page: Page): Promise<void> {
  const p = page as Page & { __offline?: boolean };
  if (p.__offline) return;
  p.__offline = true;
  await page.route(/^https?:\/\/(?!127\.0\.0\.1|localhost|\[::1\])/, (route) => route.abort());
}

/**
 * Completes the provider's dev login (any password) and consent pages in `page`, which is on (or about to
 * reach) the login page. Returns once the browser has left the provider (the redirect back to the client has
 * started), or after the device flow's success page.
 */
export async function completeLogin(page: Page, login: string): Promise<void> {
  await offline(page);
  await page.waitForSelector('input[name="login"]', { timeout: 15_000 });
  const idp = new URL(page.url()).origin;
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', 'any-password');
  await page.click('button[type="submit"]');
  // Login and consent share one URL (/interaction/UID): what comes next is told by the page's content.
  if ((await afterSubmit(page, idp)) !== 'consent') return;
  await page.click('button[type="submit"]');
  await afterSubmit(page, idp, true);
}

type Next = 'consent' | 'left' | 'success';

/** Waits for what follows a submitted provider form: the consent page, the success page, or leaving the IdP. */
async function afterSubmit(page: Page, idp: string, consented = false): Promise<Next> {
  const waits: Promise<Next>[] = [
    page.waitForURL((u) => u.origin !== idp, { timeout: 15_000 }).then(() => 'left' as const),
    page
      .locator('h1', { hasText: 'Sign-in Success' })
      .waitFor({ state: 'attached', timeout: 15_000 })
      .then(() => 'success' as const),
  ];
  if (!consented)
    waits.push(
      page
        .locator('input[name="prompt"][value="consent"]')
        .waitFor({ state: 'attached', timeout: 15_000 })
        .then(() => 'consent' as const),
    );
  // The losers time out later: their rejections are expected and dropped.
  for (const w of waits) w.catch(() => {});
  return Promise.any(waits);
}

/**
 * Completes a device authorization in `page`: opens `verificationUri` (verification_uri or
 * verification_uri_complete), enters `userCode` when asked, confirms, logs in as `login` and consents. Resolves
 * when the provider shows its success page.
 */
export async function verifyDevice(
  page: Page,
  verificationUri: string,
  userCode: string,
  login: string,
): Promise<void> {
  await offline(page);
  await page.goto(verificationUri);
  const input = page.locator('input[name="user_code"]:not([type="hidden"])');
  if (await input.count()) {
    await input.fill(userCode);
    await Promise.all([page.waitForLoadState('load'), page.click('button[form="op.deviceInputForm"]')]);
    await page.waitForSelector('button[form="op.deviceConfirmForm"][autofocus]', { timeout: 15_000 });
  }
  // The confirmation page shows the code; "Continue" (not "[ Abort ]") goes on to the login.
  await page.click('button[form="op.deviceConfirmForm"][autofocus]');
  await completeLogin(page, login);
  await page.locator('h1', { hasText: 'Sign-in Success' }).waitFor({ timeout: 15_000 });
}

/** The server's `oidc:` options for a test IdP: the role map every SSO test uses, plain HTTP on loopback. */
export function oidcOptions(
  issuer: string,
  redirectUrl: string,
  clientId = 'ringfence',
  sessionHours = 8,
): OidcOptions {
  return {
    issuer,
    clientId,
    redirectUrl,
    roleClaim: 'groups',
    roles: {
      'ringfence-admins': 'admin',
      'ringfence-approvers': 'approver',
      'ringfence-operators': 'operator',
      'ringfence-viewers': 'viewer',
    },
    nameClaim: 'preferred_username',
    sessionHours,
    allowInsecureHttp: true,
  };
}
