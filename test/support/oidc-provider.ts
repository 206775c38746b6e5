import http from 'node:http';
import type { AddressInfo } from 'node:net';
// @ts-expect-error oidc-provider ships no type declarations; the little used here is typed below.
import ProviderModule from 'oidc-provider';

/**
 * A real OpenID Connect provider (the npm `oidc-provider` package) in this process, on loopback
 * only, for the console's sign-in tests. Issuer `http://127.0.0.1:<port>`, one client
 * (`zhinian-console`, public unless `clientSecret` is given), PKCE required.
 *
 * Sign-in form (for browser tests): the provider's login page at `/interaction/<uid>` is ours, not
 * oidc-provider's dev interaction (that one takes any login without a password). Selectors:
 *   - `form#login` (POSTs to `/interaction/<uid>`)
 *   - `input[name="login"]` (the e-mail), `input[name="password"]`
 *   - `button[type="submit"]`
 * A wrong password answers 401 with the form again and `p.error` ("Invalid login or password.").
 * Consent is never asked: the client is first-party, its grant is made at sign-in.
 */

const TEST_CLIENT_ID = 'zhinian-console';
export const TEST_PASSWORD = 'secret';

interface TestUser {
  email: string;
  name: string;
  /** undefined: the provider sends no `email_verified` at all (Entra ID's default). */
  emailVerified: boolean | undefined;
  groups: string[];
}

/** admin@ / viewer@ get roles from the e-mail lists a test sets; group-admin@ from its group; nobody@ gets none. */
export const TEST_USERS: Record<string, TestUser> = Object.fromEntries(
  (
    [
      { email: 'admin@example.com', name: 'Ada Admin', emailVerified: true, groups: [] },
      { email: 'viewer@example.com', name: 'Vic Viewer', emailVerified: true, groups: [] },
      { email: 'nobody@example.com', name: 'No Body', emailVerified: true, groups: [] },
      { email: 'group-admin@example.com', name: 'Gus Group', emailVerified: true, groups: ['zhinian-admins'] },
      { email: 'unverified@example.com', name: 'Una Verified', emailVerified: false, groups: [] },
      { email: 'noclaim@example.com', name: 'Nora Noclaim', emailVerified: undefined, groups: [] },
      { email: 'group-unverified@example.com', name: 'Gil Group', emailVerified: false, groups: ['zhinian-admins'] },
    ] satisfies TestUser[]
  ).map((u) => [u.email, u]),
);

export interface TestOidcProvider {
  issuer: string;
  clientId: string;
  clientSecret: string | null;
  /** Env for a stack signing in here (issuer, client, the role lists for the test users). */
  env(): Record<string, string>;
  /** While down, every request has its connection dropped (a provider that is unreachable). */
  setDown(down: boolean): void;
  close(): Promise<void>;
}

interface ProviderOptions {
  /**
   * The client's redirect URIs. A function is read at the provider's first request, so a test can
   * start the provider, then the stack (whose URL is known only once it listens), then sign in.
   */
  redirectUris: string[] | (() => string[]);
  /** A confidential client; default: public (PKCE only). */
  clientSecret?: string;
  /** How a confidential client authenticates; the provider then offers only that method. */
  tokenEndpointAuthMethod?: 'client_secret_basic' | 'client_secret_post';
}

/** The part of oidc-provider's API used here. */
interface Provider {
  callback(): (req: http.IncomingMessage, res: http.ServerResponse) => void;
  interactionDetails(req: http.IncomingMessage, res: http.ServerResponse): Promise<{ uid: string; prompt: { name: string }; params: Record<string, unknown> }>;
  interactionFinished(req: http.IncomingMessage, res: http.ServerResponse, result: unknown, options?: { mergeWithLastSubmission?: boolean }): Promise<void>;
  on(event: string, listener: (...args: unknown[]) => void): void;
}
const ProviderClass = ProviderModule as new (issuer: string, configuration: Record<string, unknown>) => Provider;

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid: string, error: string | null, login = ''): string {
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Test IdP sign-in</title></head>
<body>
<h1>Test identity provider</h1>
${error ? `<p class="error">${escapeHtml(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${escapeHtml(uid)}">
<label>E-mail <input type="text" name="login" value="${escapeHtml(login)}" autocomplete="username" autofocus></label>
<label>Password <input type="password" name="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button>
</form>
</body>
</html>
`;
}

async function readForm(req: http.IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

export async function startOidcProvider(opts: ProviderOptions): Promise<TestOidcProvider> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const issuer = `http://127.0.0.1:${port}`;
  const clientSecret = opts.clientSecret ?? null;
  const authMethod = clientSecret === null ? 'none' : (opts.tokenEndpointAuthMethod ?? 'client_secret_basic');

  let provider: Provider | null = null;
  const providerOf = (): Provider => {
    if (provider) return provider;
    const redirectUris = typeof opts.redirectUris === 'function' ? opts.redirectUris() : opts.redirectUris;
    provider = new ProviderClass(issuer, {
      clients: [
        {
          client_id: TEST_CLIENT_ID,
          ...(clientSecret === null ? {} : { client_secret: clientSecret }),
          token_endpoint_auth_method: authMethod,
          redirect_uris: redirectUris,
          response_types: ['code'],
          grant_types: ['authorization_code'],
        },
      ],
      clientAuthMethods: clientSecret === null ? ['none'] : ['none', authMethod],
      pkce: { required: () => true },
      // groups ride along with profile, so the default scopes bring them.
      claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'groups'] },
      cookies: { keys: ['test-oidc-provider-cookie-key-0123456789'] },
      features: { devInteractions: { enabled: false } },
      interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
      async findAccount(_ctx: unknown, sub: string) {
        const user = TEST_USERS[sub];
        if (!user) return undefined;
        return {
          accountId: sub,
          async claims() {
            return {
              sub,
              email: user.email,
              ...(user.emailVerified === undefined ? {} : { email_verified: user.emailVerified }),
              name: user.name,
              groups: user.groups,
            };
          },
        };
      },
      // First-party client: no consent screen, the grant covers what was asked.
      async loadExistingGrant(ctx: {
        oidc: {
          result?: { consent?: { grantId?: string } };
          session: { accountId?: string; grantIdFor(clientId: string): string | undefined };
          client: { clientId: string };
          params: { scope?: string };
          provider: { Grant: { find(id: string): Promise<unknown> } & (new (o: Record<string, string>) => { addOIDCScope(s: string): void; save(): Promise<string> }) };
        };
      }) {
        const { oidc } = ctx;
        const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
        if (grantId) {
          const found = await oidc.provider.Grant.find(grantId);
          if (found) return found;
        }
        if (!oidc.session.accountId) return undefined;
        const grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
        grant.addOIDCScope(oidc.params.scope ?? 'openid');
        await grant.save();
        return grant;
      },
      ttl: { Session: 3600, Interaction: 3600, Grant: 3600, AccessToken: 3600, AuthorizationCode: 600, IdToken: 3600 },
    });
    return provider;
  };

  let down = false;
  server.on('request', async (req, res) => {
    if (down) return req.socket.destroy();
    try {
      const p = providerOf();
      const match = /^\/interaction\/([^/?]+)(?:\?.*)?$/.exec(req.url ?? '');
      if (!match) return p.callback()(req, res);
      const details = await p.interactionDetails(req, res);
      if (details.prompt.name !== 'login') {
        // Consent is granted by loadExistingGrant; anything else is not part of these tests.
        return p.interactionFinished(req, res, { error: 'access_denied', error_description: `unsupported prompt ${details.prompt.name}` });
      }
      res.setHeader('cache-control', 'no-store');
      if (req.method === 'GET') {
        res.setHeader('content-type', 'text/html; charset=utf-8');
        return res.end(loginPage(details.uid, null));
      }
      if (req.method !== 'POST') {
        res.statusCode = 405;
        return res.end();
      }
      const form = await readForm(req);
      const login = (form.get('login') ?? '').trim().toLowerCase();
      if (!TEST_USERS[login] || form.get('password') !== TEST_PASSWORD) {
        res.statusCode = 401;
        res.setHeader('content-type', 'text/html; charset=utf-8');
        return res.end(loginPage(details.uid, 'Invalid login or password.', login));
      }
      return p.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    } catch (error) {
      if (!res.headersSent) {
        res.statusCode = 400;
        res.setHeader('content-type', 'text/plain; charset=utf-8');
      }
      res.end(`test provider: ${(error as Error).message}`);
    }
  });

  return {
    issuer,
    clientId: TEST_CLIENT_ID,
    clientSecret,
    env: () => ({
      ZHINIAN_OIDC_ISSUER: issuer,
      ZHINIAN_OIDC_CLIENT_ID: TEST_CLIENT_ID,
      ...(clientSecret === null ? {} : { ZHINIAN_OIDC_CLIENT_SECRET: clientSecret }),
      ZHINIAN_ADMIN_EMAILS: 'admin@example.com,unverified@example.com,noclaim@example.com,group-unverified@example.com',
      ZHINIAN_VIEWER_EMAILS: 'viewer@example.com',
      ZHINIAN_OIDC_GROUPS_CLAIM: 'groups',
      ZHINIAN_ADMIN_GROUPS: 'zhinian-admins',
    }),
    setDown: (value) => {
      down = value;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Cookies by host:port (paths and expiry are not modelled beyond deletion: enough for these flows). */
export class CookieJar {
  readonly cookies = new Map<string, Map<string, string>>();

  store(url: string, response: Response): void {
    const host = new URL(url).host;
    const jar = this.cookies.get(host) ?? new Map<string, string>();
    this.cookies.set(host, jar);
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const gone = value === '' || attributes.some((a) => /^\s*max-age=0\s*$/i.test(a) || (/^\s*expires=/i.test(a) && Date.parse(a.split('=')[1]) < Date.now()));
      if (gone) jar.delete(name);
      else jar.set(name, value);
    }
  }

  header(url: string): string {
    const jar = this.cookies.get(new URL(url).host);
    return jar ? [...jar].map(([n, v]) => `${n}=${v}`).join('; ') : '';
  }

  get(url: string, name: string): string | undefined {
    return this.cookies.get(new URL(url).host)?.get(name);
  }
}

export type SignInResult =
  /** The console's answer to the provider's redirect back (`/admin/auth/callback`). */
  | { kind: 'callback'; response: Response; body: string; authorizeUrl: URL; callbackUrl: URL }
  /** The provider refused the login form. */
  | { kind: 'login-refused'; status: number; body: string; authorizeUrl: URL };

/**
 * Drives a sign-in over plain HTTP, as a browser would: `/admin/auth/login`, the provider's
 * redirects, its login form, back to the console's callback (whose answer is returned, not
 * followed). `beforeCallback` may rewrite the callback URL (to tamper with `state`);
 * `callbackHeaders` go with that last request (e.g. a browser's Accept).
 */
export async function signInOverHttp(
  appUrl: string,
  login: string,
  password: string,
  opts: { jar?: CookieJar; beforeCallback?: (url: URL) => URL; callbackHeaders?: Record<string, string> } = {},
): Promise<SignInResult & { jar: CookieJar }> {
  const jar = opts.jar ?? new CookieJar();
  const request = async (url: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    const cookie = jar.header(url);
    if (cookie) headers.set('cookie', cookie);
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    jar.store(url, response);
    return response;
  };
  const start = await request(`${appUrl}/admin/auth/login`);
  if (start.status !== 302) throw new Error(`/admin/auth/login answered ${start.status}: ${await start.text()}`);
  await start.arrayBuffer();
  const authorizeUrl = new URL(start.headers.get('location')!);
  let url = authorizeUrl.href;
  for (let hop = 0; hop < 20; hop++) {
    if (url.startsWith(`${appUrl}/admin/auth/callback`)) {
      const callbackUrl = opts.beforeCallback ? opts.beforeCallback(new URL(url)) : new URL(url);
      const response = await request(callbackUrl.href, { headers: opts.callbackHeaders });
      return { kind: 'callback', response, body: await response.text(), authorizeUrl, callbackUrl, jar };
    }
    let response = await request(url);
    if (response.status === 200 && /\/interaction\//.test(new URL(url).pathname)) {
      await response.arrayBuffer();
      response = await request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ login, password }).toString(),
      });
      if (response.status === 401) return { kind: 'login-refused', status: response.status, body: await response.text(), authorizeUrl, jar };
    }
    const location = response.headers.get('location');
    if (response.status < 300 || response.status >= 400 || !location) {
      throw new Error(`sign-in stopped at ${url}: ${response.status} ${await response.text()}`);
    }
    await response.arrayBuffer();
    url = new URL(location, url).href;
  }
  throw new Error('sign-in: too many redirects');
}
