// `ringfence login --sso`: single sign-on from a terminal. The OAuth 2.0 device authorization grant against the
// server's OpenID provider (openid-client does the protocol: discovery, polling with interval and slow_down, the
// ID token's claims), then the ID token is exchanged for a Ringfence operator token (the server verifies it with
// jose). The token alone goes to stdout, so `export RINGFENCE_TOKEN=$(ringfence login --sso)` works; everything
// meant for the person goes to stderr. With --save-context NAME the token goes to a private file beside the CLI
// configuration instead, and NAME becomes the current context: no token in the shell at all.
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import type * as OidcClient from 'openid-client';
import { writeFileAtomicSync } from '../../files/atomic-file.ts';
import { withExamples } from '../../terminal/help.ts';
import { CliError, usageError } from '../client.ts';
import { CONTEXT_NAME, configPath, ensureConfigDir, readCliConfig, serverAddress } from '../contexts.ts';
import { printJson, printLine, terminalSafe } from '../output.ts';

/** The answer of GET /v1/auth/oidc. */
interface OidcInfo {
  enabled: boolean;
  issuer?: string;
  client_id?: string;
  device_flow?: boolean;
  dashboard?: boolean;
  /** Optional: the scopes the server wants (its role claim may need one); else derived from the issuer. */
  scope?: string;
}

/** The answer of POST /v1/auth/oidc/exchange. */
interface Exchanged {
  name: string;
  role: string;
  token: string;
  expires_at: number;
}

type Oidc = typeof OidcClient;

// "Exit 3 when refused, 1 on other failures" (the login contract).
const refused = (message: string, code = 'refused') => new CliError(message, code, 3);
const failed = (message: string, code = 'failed') => new CliError(message, code, 1);

function loopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** One request to the server's unauthenticated SSO endpoints; a refusal keeps the server's one-line message. */
async function serverCall<T>(server: string, method: string, path: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await fetch(new URL(path, server), {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    const why = (e as Error & { cause?: Error }).cause?.message ?? (e as Error).message;
    throw failed(`cannot reach ${server}: ${why}`, 'unreachable');
  }
  const text = await res.text();
  let data: { error?: string; message?: string } | null = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {} // not JSON: the raw text below says what happened
  if (!res.ok) {
    const msg = `${method} ${path}: ${res.status} ${data?.message ?? text.slice(0, 200)}`;
    // 400/401/403 are the server saying no (no role, local name, bad or expired ID token, rate limit).
    if ([400, 401, 403, 429].includes(res.status)) throw refused(msg, data?.error ?? `http_${res.status}`);
    throw failed(msg, data?.error ?? `http_${res.status}`);
  }
  return data as T;
}

/** What the device grant's failure means for the person, as one line and an exit code. */
function deviceError(oidc: Oidc, e: unknown, expiresAt: number): CliError {
  if (e instanceof oidc.ResponseBodyError) {
    const detail = e.error_description ? `: ${e.error_description}` : '';
    if (e.error === 'access_denied') return refused(`sign-in denied at the identity provider${detail}`);
    if (e.error === 'expired_token')
      return failed('the code expired before the sign-in completed; run the command again', 'expired');
    return failed(`identity provider: ${e.error}${detail}`);
  }
  const err = e as Error & { code?: string; cause?: Error };
  if (err.code === 'OAUTH_TIMEOUT' && Date.now() >= expiresAt - 1000)
    return failed('the code expired before the sign-in completed; run the command again', 'expired');
  const why = err.cause?.message ? `${err.message} (${err.cause.message})` : err.message;
  return failed(`identity provider: ${why}`);
}

/** Runs the device grant and returns the ID token the provider issued for the person who entered the code. */
async function deviceLogin(info: OidcInfo): Promise<string> {
  // Loaded here, not at start-up: every other command would pay for it.
  const oidc: Oidc = await import('openid-client');
  const issuer = new URL(info.issuer!);
  // Plain HTTP only towards a loopback issuer (tests, a local IdP); the server refuses any other such config.
  const insecure = issuer.protocol === 'http:';
  if (insecure && !loopback(issuer.hostname))
    throw failed(`refusing the identity provider ${issuer.href}: plain HTTP is allowed only on loopback`);
  let config: OidcClient.Configuration;
  try {
    config = await oidc.discovery(
      issuer,
      info.client_id!,
      { token_endpoint_auth_method: 'none' },
      oidc.None(), // a terminal holds no client secret: the device grant is for public clients
      insecure ? { execute: [oidc.allowInsecureRequests] } : undefined,
    );
  } catch (e) {
    const err = e as Error & { cause?: Error };
    throw failed(`cannot use the identity provider ${issuer.href}: ${err.cause?.message ?? err.message}`);
  }
  const meta = config.serverMetadata();
  if (!meta.device_authorization_endpoint)
    throw failed(`the identity provider ${issuer.href} offers no device authorization endpoint`);
  let scope = info.scope;
  if (!scope) {
    // The role claim usually comes with a scope of the same name (groups); ask for it when the issuer has it.
    const extra = ['groups', 'roles'].filter((s) => meta.scopes_supported?.includes(s));
    scope = ['openid', 'profile', ...extra].join(' ');
  }
  let grant: OidcClient.DeviceAuthorizationResponse;
  try {
    grant = await oidc.initiateDeviceAuthorization(config, { scope });
  } catch (e) {
    throw deviceError(oidc, e, Number.POSITIVE_INFINITY);
  }
  const expiresAt = Date.now() + grant.expires_in * 1000;
  // The provider's values are shown to a person: made terminal-safe like any other output. One write, so a
  // script reading stderr gets the whole prompt at once.
  const uri = terminalSafe(grant.verification_uri);
  const complete = grant.verification_uri_complete
    ? `(or open ${terminalSafe(grant.verification_uri_complete)})\n`
    : '';
  process.stderr.write(
    `Open ${uri} and enter code ${terminalSafe(grant.user_code)}\n${complete}` +
      `Waiting for the sign-in (the code expires at ${new Date(expiresAt).toISOString()})…\n`,
  );
  let tokens: Awaited<ReturnType<Oidc['pollDeviceAuthorizationGrant']>>;
  try {
    tokens = await oidc.pollDeviceAuthorizationGrant(config, grant);
  } catch (e) {
    throw deviceError(oidc, e, expiresAt);
  }
  if (!tokens.id_token)
    throw failed('the identity provider returned no ID token (is the scope "openid" allowed?)');
  return tokens.id_token;
}

/** Registers `ringfence login`. */
export function loginCommand(program: Command): void {
  withExamples(
    program
      .command('login')
      .description('sign in through the single sign-on provider and print a Ringfence operator token')
      .option('--sso', 'use the OpenID Connect device flow (open a URL, enter a code)')
      .option(
        '--save-context <name>',
        'save the token in a private file beside the CLI configuration and make NAME the current context',
      )
      .option(
        '--json',
        'machine-readable output: {"name","role","token","expires_at"} (no token with --save-context)',
      ),
    [
      'login --sso --server https://patch.example:8080 --save-context prod  # later commands use it',
      'login --sso --json  # prints the token: export RINGFENCE_TOKEN=$(ringfence login --sso)',
    ],
  ).action(async (o: { sso?: boolean; json?: boolean; saveContext?: string }) => {
    if (!o.sso)
      throw new CliError(
        'only single sign-on is supported: ringfence login --sso (or use an operator token via RINGFENCE_TOKEN)',
        'usage',
        2,
      );
    if (o.saveContext !== undefined && !CONTEXT_NAME.test(o.saveContext))
      throw usageError(`bad context name "${o.saveContext}": letters, digits, ".", "_" or "-"`);
    // A configuration that cannot take the context is found before the person signs in, not after.
    if (o.saveContext !== undefined) readCliConfig();
    // No token needed: this is how one gets a token.
    const server = serverAddress(program.opts());
    const info = await serverCall<OidcInfo>(server, 'GET', '/v1/auth/oidc');
    if (!info.enabled || !info.issuer || !info.client_id)
      throw failed(`single sign-on is not configured on ${server} (oidc: in server.yaml)`, 'sso_disabled');
    if (info.device_flow === false)
      throw failed(
        `the identity provider of ${server} does not offer the device flow; use the dashboard's "Sign in with SSO"`,
        'sso_no_device_flow',
      );
    const idToken = await deviceLogin(info);
    const r = await serverCall<Exchanged>(server, 'POST', '/v1/auth/oidc/exchange', { id_token: idToken });
    const until = new Date(r.expires_at).toISOString();
    if (o.saveContext) {
      const name = o.saveContext;
      const tokenFile = join(dirname(configPath()), `${name}.token`);
      ensureConfigDir(configPath());
      writeFileAtomicSync(tokenFile, `${r.token}\n`, 0o600);
      const { setContext } = await import('./config.ts');
      const saved = await setContext(name, { server, tokenFile }, true);
      if (o.json)
        return printJson({
          name: r.name,
          role: r.role,
          expires_at: r.expires_at,
          context: name,
          file: saved.file,
        });
      process.stderr.write(
        `signed in as ${terminalSafe(r.name)} (role ${terminalSafe(r.role)}) until ${until}; the token is in ${tokenFile}, and context ${name} (current) uses it\n`,
      );
      return;
    }
    if (o.json) return printJson({ name: r.name, role: r.role, token: r.token, expires_at: r.expires_at });
    printLine(r.token);
    process.stderr.write(
      `signed in as ${terminalSafe(r.name)} (role ${terminalSafe(r.role)}); the token is valid until ${until}: export RINGFENCE_TOKEN=… (or use --save-context NAME)\n`,
    );
  });
}
