// Verifies an ID token a client presents (the CLI's device flow, POST /v1/auth/oidc/exchange) with jose: the
// signature against the issuer's published keys (its discovered jwks_uri), the issuer, the audience (our
// client_id; with several audiences, azp must be ours too), expiry, and an `iat` at most ten minutes old. Only
// the asymmetric algorithms the issuer advertises are accepted: never `none`, never HS* (a symmetric key would
// be the client secret, which a public client does not have). Nothing is decoded or checked by hand.
import { createRemoteJWKSet, errors, type JWTPayload, jwtVerify } from 'jose';
import { HttpError } from '../errors.ts';

/** How old (by `iat`) a presented ID token may be. */
export const ID_TOKEN_MAX_AGE_S = 600;

/** What a presented ID token is checked against. */
export interface IdTokenCheck {
  issuer: string;
  clientId: string;
  jwksUri: string;
  /** The issuer's id_token_signing_alg_values_supported (symmetric and `none` are dropped). */
  algorithms: readonly string[];
  clock: () => number;
}

/** A refused ID token: the one-line reason (answered 401). */
export class IdTokenRefused extends Error {}

/** The asymmetric algorithms among `advertised` (RS256 when the issuer advertises none, as OIDC defaults). */
export function acceptableAlgorithms(advertised: readonly string[] | undefined): string[] {
  const list = advertised && advertised.length > 0 ? advertised : ['RS256'];
  return list.filter((a) => a !== 'none' && !/^HS/i.test(a));
}

/** Verifies presented ID tokens for one issuer and client; the issuer's keys are fetched and cached by jose. */
export class IdTokenVerifier {
  private readonly keys: ReturnType<typeof createRemoteJWKSet>;

  constructor(private readonly check: IdTokenCheck) {
    if (check.algorithms.length === 0)
      throw new Error(`the issuer ${check.issuer} advertises no asymmetric ID token signing algorithm`);
    this.keys = createRemoteJWKSet(new URL(check.jwksUri));
  }

  /** The verified claims, or IdTokenRefused with the reason. */
  async verify(idToken: string): Promise<JWTPayload> {
    const c = this.check;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(idToken, this.keys, {
        issuer: c.issuer,
        audience: c.clientId,
        algorithms: [...c.algorithms],
        currentDate: new Date(c.clock()),
        maxTokenAge: ID_TOKEN_MAX_AGE_S,
        requiredClaims: ['sub', 'iat', 'exp'],
      }));
    } catch (e) {
      // Not a verdict on the token: the issuer's keys could not be fetched.
      if (!(e instanceof errors.JOSEError) || e instanceof errors.JWKSTimeout)
        throw new HttpError(502, `cannot fetch the OpenID provider's keys: ${String((e as Error).message)}`);
      throw new IdTokenRefused(`ID token refused: ${reason(e)}`);
    }
    // OIDC Core 3.1.3.7: with several audiences the authorized party must be us; when given, it must be us.
    const several = Array.isArray(payload.aud) && payload.aud.length > 1;
    if ((several || payload.azp !== undefined) && payload.azp !== c.clientId)
      throw new IdTokenRefused(
        `ID token refused: it was issued to ${String(payload.azp)}, not ${c.clientId}`,
      );
    return payload;
  }
}

/** A one-line reason from jose's errors (their messages name the failed check, never the token). */
function reason(e: errors.JOSEError): string {
  if (e instanceof errors.JWTExpired) return 'expired';
  if (e instanceof errors.JWTClaimValidationFailed) return `${e.claim} claim check failed (${e.reason})`;
  if (e instanceof errors.JWSSignatureVerificationFailed) return 'signature does not verify';
  if (e instanceof errors.JWKSNoMatchingKey) return 'signed by a key the issuer does not publish';
  if (e instanceof errors.JOSEAlgNotAllowed) return 'signing algorithm not accepted';
  if (e instanceof errors.JWTInvalid || e instanceof errors.JWSInvalid) return 'not a valid signed JWT';
  return (e as Error).message.replace(/\s+/g, ' ').slice(0, 200);
}
