import * as client from 'openid-client';
import type { ConsoleConfig } from '../config/index.ts';
import type { Identity } from './roles.ts';

type OidcConfig = NonNullable<ConsoleConfig['oidc']>;

/** What one sign-in keeps between the redirect to the provider and its callback (in a signed cookie). */
export interface OidcFlow {
  state: string;
  nonce: string;
  codeVerifier: string;
}

interface SignedInIdentity extends Identity {
  name: string;
}

/**
 * A refused sign-in: `invalid` (the callback does not check out: a state mismatch, a provider
 * error, a code the provider refuses, an ID token that fails validation) answers 400;
 * `unavailable` (the provider cannot be reached) 503.
 */
export class OidcError extends Error {
  constructor(
    readonly kind: 'invalid' | 'unavailable',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface OidcClient {
  /** The provider URL to send the browser to, and the flow values to keep until the callback. */
  start(): Promise<{ url: string; flow: OidcFlow }>;
  /** Redeems the callback (`currentUrl`, with its query) for the user's identity. */
  finish(currentUrl: URL, flow: OidcFlow): Promise<SignedInIdentity>;
}

const isHttp = (url: string) => url.startsWith('http:');

/**
 * The console's OpenID Connect client (authorization code flow with PKCE S256, state and nonce).
 * Discovery happens at the first sign-in and is kept; a failure is not kept, so a provider that
 * is down when the server starts only delays sign-in. Without a client secret the client is
 * public (PKCE only); with one, it authenticates with client_secret_basic unless the provider
 * only offers client_secret_post.
 */
export function createOidcClient(opts: { oidc: OidcConfig; groupsClaim: string | null; redirectUri: () => string }): OidcClient {
  const { oidc } = opts;
  let discovered: Promise<client.Configuration> | null = null;

  async function discover(): Promise<client.Configuration> {
    const execute = isHttp(oidc.issuer) ? [client.allowInsecureRequests] : [];
    const found = await client.discovery(new URL(oidc.issuer), oidc.clientId, undefined, client.None(), { execute });
    const metadata = found.serverMetadata();
    let auth: client.ClientAuth = client.None();
    const clientMetadata: Partial<client.ClientMetadata> = {};
    if (oidc.clientSecret !== null) {
      const methods = metadata.token_endpoint_auth_methods_supported ?? ['client_secret_basic'];
      auth =
        !methods.includes('client_secret_basic') && methods.includes('client_secret_post')
          ? client.ClientSecretPost(oidc.clientSecret)
          : client.ClientSecretBasic(oidc.clientSecret);
      clientMetadata.client_secret = oidc.clientSecret;
    }
    const configuration = new client.Configuration(metadata, oidc.clientId, clientMetadata, auth);
    if (isHttp(oidc.issuer)) client.allowInsecureRequests(configuration);
    return configuration;
  }

  function configuration(): Promise<client.Configuration> {
    if (!discovered) {
      discovered = discover().catch((error: unknown) => {
        discovered = null;
        throw new OidcError('unavailable', `The identity provider (${oidc.issuer}) cannot be reached: ${(error as Error).message}`, { cause: error });
      });
    }
    return discovered;
  }

  return {
    async start() {
      const config = await configuration();
      const flow: OidcFlow = { state: client.randomState(), nonce: client.randomNonce(), codeVerifier: client.randomPKCECodeVerifier() };
      const url = client.buildAuthorizationUrl(config, {
        redirect_uri: opts.redirectUri(),
        scope: oidc.scopes,
        response_type: 'code',
        code_challenge: await client.calculatePKCECodeChallenge(flow.codeVerifier),
        code_challenge_method: 'S256',
        state: flow.state,
        nonce: flow.nonce,
      });
      return { url: url.href, flow };
    },

    async finish(currentUrl, flow) {
      const config = await configuration();
      let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
      try {
        tokens = await client.authorizationCodeGrant(
          config,
          currentUrl,
          { pkceCodeVerifier: flow.codeVerifier, expectedState: flow.state, expectedNonce: flow.nonce, idTokenExpected: true },
          { redirect_uri: opts.redirectUri() },
        );
      } catch (error) {
        throw classify(error, 'The sign-in response was refused');
      }
      const claims = tokens.claims();
      if (!claims) throw new OidcError('invalid', 'The identity provider sent no ID token.');
      let info: Record<string, unknown> = claims;
      const needsUserInfo = claims.email === undefined || (opts.groupsClaim !== null && claims[opts.groupsClaim] === undefined) || claims.name === undefined;
      if (needsUserInfo && config.serverMetadata().userinfo_endpoint) {
        try {
          const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
          info = { ...userinfo, ...withoutUndefined(claims) };
        } catch (error) {
          // Only the ID token's claims then; a user without an e-mail there gets no role.
          if (claims.email === undefined) throw classify(error, "The identity provider's userinfo was refused");
        }
      }
      const email = typeof info.email === 'string' && info.email.length > 0 ? info.email : null;
      const verified = info.email_verified;
      const groupsValue = opts.groupsClaim === null ? undefined : info[opts.groupsClaim];
      const groups = Array.isArray(groupsValue) ? groupsValue.filter((g): g is string => typeof g === 'string') : typeof groupsValue === 'string' ? [groupsValue] : [];
      const name = typeof info.name === 'string' && info.name.length > 0 ? info.name : (email ?? String(claims.sub));
      return {
        subject: String(claims.sub),
        email,
        emailVerified: typeof verified === 'boolean' ? verified : verified === 'true' ? true : verified === 'false' ? false : undefined,
        groups,
        name,
      };
    },
  };
}

function withoutUndefined(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

/** openid-client's validation and protocol errors are the caller's (400); a failed fetch is the provider's (503). */
function classify(error: unknown, what: string): OidcError {
  if (error instanceof OidcError) return error;
  if ((error instanceof TypeError && error.message === 'fetch failed') || (error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError'))) {
    return new OidcError('unavailable', `${what}: the identity provider cannot be reached.`, { cause: error });
  }
  const e = error as { message?: string; error?: string; error_description?: string };
  const detail = e.error ? `${e.error}${e.error_description ? `: ${e.error_description}` : ''}` : (e.message ?? String(error));
  return new OidcError('invalid', `${what}: ${detail}`, { cause: error });
}
