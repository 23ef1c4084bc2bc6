// The server as an OpenID Connect relying party (openid-client): discovery of the issuer (cached, retried when
// it failed), the dashboard's authorization-code flow with PKCE S256, state and nonce, and the verifier of ID
// tokens the CLI presents (./id-token.ts). Pending dashboard logins live in this process's memory, keyed by
// `state`, at most PENDING_MAX for PENDING_TTL_MS each: the PKCE verifier and nonce never leave the server.
import * as client from 'openid-client';
import type { OidcOptions } from '../config.ts';
import { HttpError } from '../errors.ts';
import { acceptableAlgorithms, IdTokenVerifier } from './id-token.ts';

/** At most this many dashboard logins wait for their callback at once (the oldest is dropped beyond). */
export const PENDING_MAX = 1000;
/** How long a dashboard login may take from /login to /callback. */
export const PENDING_TTL_MS = 10 * 60_000;
/** How long discovered metadata is used before it is fetched again. */
const DISCOVERY_TTL_MS = 60 * 60_000;

interface Pending {
  verifier: string;
  nonce: string;
  expires: number;
}

interface Discovered {
  config: client.Configuration;
  verifier: IdTokenVerifier;
  at: number;
}

/** The IdP's answer to a sign-in: the verified ID token claims. */
export interface SignedIn {
  claims: Record<string, unknown>;
  issuer: string;
  subject: string;
}

/** 502: the IdP cannot be reached or answers nonsense. */
const badGateway = (message: string) => new HttpError(502, message);

/** One line from any error (openid-client's carry an OAuth `error` and `error_description`). */
export function oneLine(e: unknown): string {
  const o = e as { error?: unknown; error_description?: unknown; message?: unknown };
  const text =
    typeof o?.error === 'string'
      ? `${o.error}${typeof o.error_description === 'string' ? `: ${o.error_description}` : ''}`
      : String(o?.message ?? e);
  return text.replace(/\s+/g, ' ').slice(0, 300);
}

export class RelyingParty {
  private discovered: Discovered | null = null;
  private discovering: Promise<Discovered> | null = null;
  private readonly pending = new Map<string, Pending>();

  constructor(
    readonly opts: OidcOptions,
    private readonly clock: () => number,
  ) {}

  /** Whether the dashboard may sign in (a redirect URL is configured). */
  get dashboard(): boolean {
    return this.opts.redirectUrl !== undefined;
  }

  /** The scopes asked for: openid, profile, and the role claim when the issuer offers a scope of that name. */
  scope(config: client.Configuration): string {
    const offered = config.serverMetadata().scopes_supported ?? [];
    return [
      'openid',
      'profile',
      ...(offered.includes(this.opts.roleClaim) ? [this.opts.roleClaim] : []),
    ].join(' ');
  }

  /** The issuer's metadata and our client, discovered once an hour (a failure is not cached). */
  async discover(): Promise<Discovered> {
    const d = this.discovered;
    if (d && this.clock() - d.at < DISCOVERY_TTL_MS) return d;
    this.discovering ??= this.fetchDiscovery().finally(() => {
      this.discovering = null;
    });
    return this.discovering;
  }

  private async fetchDiscovery(): Promise<Discovered> {
    const o = this.opts;
    let config: client.Configuration;
    try {
      config = await client.discovery(
        new URL(o.issuer),
        o.clientId,
        o.redirectUrl ? { redirect_uris: [o.redirectUrl] } : undefined,
        o.clientSecret ? client.ClientSecretBasic(o.clientSecret) : client.None(),
        // The config accepts plain HTTP for a loopback issuer only (config.ts).
        o.allowInsecureHttp ? { execute: [client.allowInsecureRequests] } : undefined,
      );
    } catch (e) {
      throw badGateway(`cannot discover the OpenID provider ${o.issuer}: ${oneLine(e)}`);
    }
    const meta = config.serverMetadata();
    if (!meta.jwks_uri) throw badGateway(`the OpenID provider ${o.issuer} publishes no jwks_uri`);
    if (new URL(meta.jwks_uri).protocol !== 'https:' && !o.allowInsecureHttp)
      throw badGateway(`the OpenID provider's jwks_uri ${meta.jwks_uri} is not https`);
    const verifier = new IdTokenVerifier({
      issuer: meta.issuer,
      clientId: o.clientId,
      jwksUri: meta.jwks_uri,
      algorithms: acceptableAlgorithms(meta.id_token_signing_alg_values_supported),
      clock: this.clock,
    });
    this.discovered = { config, verifier, at: this.clock() };
    return this.discovered;
  }

  /** Starts a dashboard login: remembers state, nonce and PKCE verifier; returns the IdP's authorization URL. */
  async begin(): Promise<URL> {
    const redirect = this.opts.redirectUrl;
    if (!redirect) throw new HttpError(404, 'dashboard single sign-on is off (oidc.redirect_url is not set)');
    const { config } = await this.discover();
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    this.remember(state, { verifier, nonce, expires: this.clock() + PENDING_TTL_MS });
    return client.buildAuthorizationUrl(config, {
      redirect_uri: redirect,
      scope: this.scope(config),
      response_type: 'code',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
  }

  private remember(state: string, p: Pending): void {
    const now = this.clock();
    for (const [k, v] of this.pending) if (v.expires <= now) this.pending.delete(k);
    // Full of live logins: the oldest goes (Map keeps insertion order); its callback will say "start again".
    while (this.pending.size >= PENDING_MAX) this.pending.delete(this.pending.keys().next().value as string);
    this.pending.set(state, p);
  }

  /**
   * Finishes a dashboard login from the callback's query: the state must be pending (it is used up either
   * way); openid-client exchanges the code and checks state, PKCE, the ID token and its nonce.
   */
  async finish(query: URLSearchParams): Promise<SignedIn> {
    const state = query.get('state') ?? '';
    const p = this.pending.get(state);
    this.pending.delete(state);
    if (!p || p.expires <= this.clock())
      throw new HttpError(400, 'this sign-in is unknown or expired; start again');
    const redirect = this.opts.redirectUrl;
    if (!redirect) throw new HttpError(404, 'dashboard single sign-on is off');
    const { config } = await this.discover();
    // The URL the IdP sent the browser to, as configured (behind a proxy the request's own URL may differ).
    const current = new URL(redirect);
    current.search = query.toString();
    let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
    try {
      tokens = await client.authorizationCodeGrant(config, current, {
        pkceCodeVerifier: p.verifier,
        expectedNonce: p.nonce,
        expectedState: state,
        idTokenExpected: true,
      });
    } catch (e) {
      throw new HttpError(401, `the OpenID provider refused the sign-in: ${oneLine(e)}`);
    }
    const claims = tokens.claims();
    if (!claims) throw new HttpError(401, 'the OpenID provider returned no ID token');
    return { claims: { ...claims }, issuer: claims.iss, subject: claims.sub };
  }

  /** Verifies an ID token a client presents (jose; ./id-token.ts). */
  async verifyPresented(idToken: string): Promise<SignedIn> {
    const { verifier } = await this.discover();
    const claims = await verifier.verify(idToken);
    return { claims: { ...claims }, issuer: String(claims.iss), subject: String(claims.sub) };
  }

  /** Whether the issuer offers the device authorization grant (for `ringfence login --sso`). */
  async deviceFlow(): Promise<boolean> {
    const { config } = await this.discover();
    return config.serverMetadata().device_authorization_endpoint !== undefined;
  }

  /** How many dashboard logins are pending (tests). */
  get pendingCount(): number {
    return this.pending.size;
  }
}
