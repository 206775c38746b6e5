// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { roleFor } from '../src/console/roles.ts';
import { KEY_A, startStack, testEnv, type Stack } from './helpers.ts';
import { getJson, redeemAdminLink } from './console-helpers.ts';
import { CookieJar, signInOverHttp, startOidcProvider, type TestOidcProvider, TEST_PASSWORD, TEST_USERS } from './support/oidc-provider.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const SESSION_COOKIE = 'zhinian_console';
const FLOW_COOKIE = 'zhinian_oidc';

const setCookie = (response: Response, name: string) => response.headers.getSetCookie().find((c) => c.startsWith(`${name}=`));
/** A Set-Cookie line that actually sets (not clears) `name`. */
const setsCookie = (response: Response, name: string) => {
  const line = setCookie(response, name);
  return line !== undefined && !/^[^=]+=;/.test(line) && !/max-age=0/i.test(line);
};
const attributes = (line: string) =>
  line
    .split(';')
    .slice(1)
    .map((a) => a.trim().toLowerCase());

/** A signed-in session cookie (`name=value`) for `login`. */
async function signIn(stack: Stack, login: string): Promise<string> {
  const result = await signInOverHttp(stack.url, login, TEST_PASSWORD);
  assert.equal(result.kind, 'callback');
  assert.equal(result.kind === 'callback' && result.response.status, 302, result.kind === 'callback' ? result.body : '');
  const value = result.jar.get(stack.url, SESSION_COOKIE);
  assert.ok(value, 'a session cookie');
  return `${SESSION_COOKIE}=${value}`;
}

const me = (stack: Stack, cookie: string) => getJson(`${stack.url}/admin/api/me`, { headers: { cookie } });

describe('roleFor: e-mail lists, domain patterns, groups', () => {
  const config = {
    adminEmails: ['boss@example.com', '*@admins.example'],
    viewerEmails: ['*@example.com'],
    adminGroups: ['ops'],
    viewerGroups: ['staff'],
    allowUnverifiedEmail: false,
  };
  const who = (email: string | null, emailVerified: boolean | 'absent' = true, groups: string[] = [], allowUnverifiedEmail = false) =>
    roleFor({ subject: 'sub-1', email, emailVerified: emailVerified === 'absent' ? undefined : emailVerified, groups }, { ...config, allowUnverifiedEmail });

  test('exact addresses and *@domain patterns, case-insensitive; admin wins over viewer', () => {
    assert.equal(who('Boss@Example.COM'), 'admin');
    assert.equal(who('anyone@admins.example'), 'admin');
    assert.equal(who('someone@example.com'), 'viewer');
    assert.equal(who('someone@sub.example.com'), null, 'a pattern is one domain, not its subdomains');
    assert.equal(who('someone@notexample.com'), null);
    assert.equal(who('@example.com'), null);
    assert.equal(who('someone@other.example'), null);
  });

  test('only email_verified true gives an e-mail role; an absent claim counts only when the operator allows it', () => {
    assert.equal(who('boss@example.com', false), null);
    assert.equal(who('boss@example.com', 'absent'), null, 'no claim (Entra ID by default): no role');
    assert.equal(who('boss@example.com', 'absent', [], true), 'admin', 'ZHINIAN_OIDC_ALLOW_UNVERIFIED_EMAIL=true');
    assert.equal(who('boss@example.com', false, [], true), null, 'an explicit false never counts');
    assert.equal(who(null, true), null);
  });

  test('addresses compare in ASCII lower case only: no Unicode case folding', () => {
    assert.equal(who('BOSS@EXAMPLE.COM'), 'admin');
    // U+212A KELVIN SIGN lower-cases to "k" in Unicode; it must not match a "k" in a listed address.
    const kelvin = roleFor({ subject: 's', email: '\u212Aim@example.org', emailVerified: true, groups: [] }, { ...config, adminEmails: ['kim@example.org'], viewerEmails: [] });
    assert.equal(kelvin, null);
    const dotlessI = roleFor(
      { subject: 's', email: 'adm\u0130n@example.org', emailVerified: true, groups: [] },
      { ...config, adminEmails: ['admin@example.org'], viewerEmails: [] },
    );
    assert.equal(dotlessI, null);
    assert.notEqual(who(' boss@example.com'), 'admin', 'no trimming: the address is compared as sent');
  });

  test('groups give roles beside the e-mail lists, admin first', () => {
    assert.equal(who(null, 'absent', ['ops']), 'admin');
    assert.equal(who('x@elsewhere.example', true, ['staff']), 'viewer');
    assert.equal(who('someone@example.com', true, ['ops']), 'admin');
    assert.equal(who('boss@example.com', false, ['staff']), 'viewer');
    assert.equal(who('x@elsewhere.example', true, ['Ops']), null, 'group names are exact');
  });
});

describe('console sign-in through OpenID Connect (public client, PKCE)', () => {
  let idp: TestOidcProvider;
  let stack: Stack;

  before(async () => {
    idp = await startOidcProvider({ redirectUris: () => [`${stack.url}/admin/auth/callback`] });
    stack = await startStack({ env: idp.env(), worker: false });
  });
  after(async () => {
    await stack?.stop();
    await idp?.close();
  });

  test('/admin/auth/login redirects to the provider with PKCE S256, state and nonce, keeping them in a signed cookie', async () => {
    const response = await fetch(`${stack.url}/admin/auth/login`, { redirect: 'manual' });
    assert.equal(response.status, 302);
    const location = new URL(response.headers.get('location')!);
    assert.equal(location.origin, idp.issuer);
    const q = location.searchParams;
    assert.equal(q.get('response_type'), 'code');
    assert.equal(q.get('client_id'), 'zhinian-console');
    assert.equal(q.get('redirect_uri'), `${stack.url}/admin/auth/callback`);
    assert.equal(q.get('code_challenge_method'), 'S256');
    assert.match(q.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.ok((q.get('state') ?? '').length >= 20);
    assert.ok((q.get('nonce') ?? '').length >= 20);
    assert.match(q.get('scope') ?? '', /\bopenid\b/);
    const flow = setCookie(response, FLOW_COOKIE);
    assert.ok(flow);
    const attrs = attributes(flow);
    assert.ok(attrs.includes('httponly'));
    assert.ok(attrs.includes('samesite=lax'));
    assert.ok(attrs.includes('path=/admin/auth'));
    assert.match(decodeURIComponent(flow.split(';')[0]), /\}\.[A-Za-z0-9+/_-]{20,}$/, 'signed');
    // Two sign-ins never share state.
    const again = new URL((await fetch(`${stack.url}/admin/auth/login`, { redirect: 'manual' })).headers.get('location')!);
    assert.notEqual(again.searchParams.get('state'), q.get('state'));
    assert.notEqual(again.searchParams.get('code_challenge'), q.get('code_challenge'));
  });

  test('an admin signs in: session cookie HttpOnly, SameSite=Lax, Path=/admin; /admin/api/me gives the admin role and a CSRF token', async () => {
    const result = await signInOverHttp(stack.url, 'admin@example.com', TEST_PASSWORD);
    assert.equal(result.kind, 'callback');
    if (result.kind !== 'callback') return;
    assert.equal(result.response.status, 302, result.body);
    assert.equal(result.response.headers.get('location'), '/admin');
    const line = setCookie(result.response, SESSION_COOKIE);
    assert.ok(line, 'session cookie set');
    const attrs = attributes(line);
    assert.ok(attrs.includes('httponly'));
    assert.ok(attrs.includes('samesite=lax'));
    assert.ok(attrs.includes('path=/admin'));
    assert.ok(!attrs.includes('secure'), 'http base URL: not Secure');
    assert.ok(!setsCookie(result.response, FLOW_COOKIE), 'the flow cookie is cleared');
    const { status, body } = await me(stack, `${SESSION_COOKIE}=${result.jar.get(stack.url, SESSION_COOKIE)}`);
    assert.equal(status, 200);
    assert.deepEqual(body.user, { email: 'admin@example.com', name: 'Ada Admin', role: 'admin' });
    assert.equal(typeof body.csrfToken, 'string');
    assert.ok(body.csrfToken.length >= 20);
  });

  test('a viewer signs in with the viewer role', async () => {
    const { status, body } = await me(stack, await signIn(stack, 'viewer@example.com'));
    assert.equal(status, 200);
    assert.deepEqual(body.user, { email: 'viewer@example.com', name: TEST_USERS['viewer@example.com'].name, role: 'viewer' });
  });

  test('the groups claim gives the admin role to an address in no list', async () => {
    const { status, body } = await me(stack, await signIn(stack, 'group-admin@example.com'));
    assert.equal(status, 200);
    assert.equal(body.user.role, 'admin');
    assert.equal(body.user.email, 'group-admin@example.com');
  });

  for (const [login, why] of [
    ['nobody@example.com', 'in no list and no group'],
    ['unverified@example.com', 'listed, but email_verified is false'],
  ] as const) {
    test(`a user ${why} gets 403 and no session cookie`, async () => {
      const result = await signInOverHttp(stack.url, login, TEST_PASSWORD);
      assert.equal(result.kind, 'callback');
      if (result.kind !== 'callback') return;
      assert.equal(result.response.status, 403, result.body);
      assert.equal(JSON.parse(result.body).code, 'forbidden');
      assert.ok(!setsCookie(result.response, SESSION_COOKIE));
      assert.equal(result.jar.get(stack.url, SESSION_COOKIE), undefined);
    });
  }

  test('a browser (Accept: text/html) gets the refusal as a page, with the same status and no cookie', async () => {
    const result = await signInOverHttp(stack.url, 'nobody@example.com', TEST_PASSWORD, { callbackHeaders: { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' } });
    assert.equal(result.kind, 'callback');
    if (result.kind !== 'callback') return;
    assert.equal(result.response.status, 403);
    assert.match(result.response.headers.get('content-type') ?? '', /text\/html/);
    assert.match(result.body, /nobody@example\.com has no role/);
    assert.match(result.body, /href="\/admin\/auth\/login"/);
    assert.doesNotMatch(result.body, /<script|style=/);
    assert.ok(!setsCookie(result.response, SESSION_COOKIE));
  });

  test('a wrong password is refused at the provider', async () => {
    const result = await signInOverHttp(stack.url, 'admin@example.com', 'not-the-password');
    assert.equal(result.kind, 'login-refused');
    assert.equal(result.kind === 'login-refused' && result.status, 401);
    assert.match(result.body, /Invalid login or password/);
    assert.equal(result.jar.get(stack.url, SESSION_COOKIE), undefined);
  });

  test('a callback whose state does not match the flow cookie is 400 and signs nobody in', async () => {
    const result = await signInOverHttp(stack.url, 'admin@example.com', TEST_PASSWORD, {
      beforeCallback: (url) => {
        url.searchParams.set('state', 'x'.repeat(url.searchParams.get('state')!.length));
        return url;
      },
    });
    assert.equal(result.kind, 'callback');
    if (result.kind !== 'callback') return;
    assert.equal(result.response.status, 400, result.body);
    assert.equal(JSON.parse(result.body).code, 'invalid_request');
    assert.ok(!setsCookie(result.response, SESSION_COOKIE));
  });

  test('a callback without the flow cookie, or with a tampered one, is 400', async () => {
    const jar = new CookieJar();
    const result = await signInOverHttp(stack.url, 'admin@example.com', TEST_PASSWORD, {
      jar,
      beforeCallback: (url) => {
        const flow = jar.get(stack.url, FLOW_COOKIE)!;
        // Flip the last character of the signature.
        const tampered = flow.slice(0, -1) + (flow.endsWith('A') ? 'B' : 'A');
        jar.cookies.get(new URL(stack.url).host)!.set(FLOW_COOKIE, tampered);
        return url;
      },
    });
    assert.equal(result.kind === 'callback' && result.response.status, 400);
    assert.ok(result.kind === 'callback' && !setsCookie(result.response, SESSION_COOKIE));
    const bare = await getJson(`${stack.url}/admin/auth/callback?code=abc&state=def`);
    assert.equal(bare.status, 400);
    assert.equal(bare.body.code, 'invalid_request');
  });

  test('a provider error, or a code the provider refuses, is 400, never 500', async () => {
    const start = await fetch(`${stack.url}/admin/auth/login`, { redirect: 'manual' });
    const state = new URL(start.headers.get('location')!).searchParams.get('state')!;
    const flow = setCookie(start, FLOW_COOKIE)!.split(';')[0];
    const denied = await getJson(`${stack.url}/admin/auth/callback?error=access_denied&state=${state}`, { headers: { cookie: flow } });
    assert.equal(denied.status, 400);
    assert.equal(denied.body.code, 'invalid_request');
    const bogus = await getJson(`${stack.url}/admin/auth/callback?code=not-a-code&state=${state}&iss=${encodeURIComponent(idp.issuer)}`, { headers: { cookie: flow } });
    assert.equal(bogus.status, 400, JSON.stringify(bogus.body));
    assert.equal(bogus.body.code, 'invalid_request');
    assert.ok(!bogus.headers.getSetCookie().some((c) => c.startsWith(`${SESSION_COOKIE}=`)));
  });

  test('the code of a finished sign-in cannot be used again', async () => {
    let callbackUrl = '';
    const jar = new CookieJar();
    const first = await signInOverHttp(stack.url, 'admin@example.com', TEST_PASSWORD, {
      jar,
      beforeCallback: (url) => {
        callbackUrl = url.href;
        return url;
      },
    });
    assert.equal(first.kind === 'callback' && first.response.status, 302);
    // A new flow cookie whose state is made to match; the code is spent.
    const start = await fetch(`${stack.url}/admin/auth/login`, { redirect: 'manual' });
    const state = new URL(start.headers.get('location')!).searchParams.get('state')!;
    const replay = new URL(callbackUrl);
    replay.searchParams.set('state', state);
    const again = await getJson(replay.href, { headers: { cookie: setCookie(start, FLOW_COOKIE)!.split(';')[0] } });
    assert.equal(again.status, 400);
    assert.ok(!again.headers.getSetCookie().some((c) => c.startsWith(`${SESSION_COOKIE}=`)));
  });

  test('a tampered session cookie is refused (401 on /admin/api/me, redirect to sign-in on a page)', async () => {
    const cookie = await signIn(stack, 'admin@example.com');
    const [name, value] = cookie.split('=');
    const dot = decodeURIComponent(value).lastIndexOf('.');
    const raw = decodeURIComponent(value);
    const otherId = `${raw.slice(0, dot - 1)}${raw[dot - 1] === 'A' ? 'B' : 'A'}${raw.slice(dot)}`;
    for (const bad of [`${name}=${encodeURIComponent(otherId)}`, `${name}=${encodeURIComponent(raw.slice(0, dot))}`, `${name}=garbage`]) {
      const { status, body } = await me(stack, bad);
      assert.equal(status, 401, bad);
      assert.equal(body.code, 'unauthorized');
    }
    const page = await fetch(`${stack.url}/admin`, { redirect: 'manual', headers: { cookie: `${name}=garbage` } });
    assert.equal(page.status, 302);
    assert.equal(page.headers.get('location'), '/admin/auth/login');
    assert.equal((await me(stack, cookie)).status, 200, 'the genuine cookie still works');
  });

  test('logout needs the CSRF token; it ends the session on the server', async () => {
    const cookie = await signIn(stack, 'admin@example.com');
    const { body } = await me(stack, cookie);
    const logout = (headers: Record<string, string>) => fetch(`${stack.url}/admin/auth/logout`, { method: 'POST', redirect: 'manual', headers: { cookie, ...headers } });
    const without = await logout({});
    assert.equal(without.status, 403);
    assert.equal((await without.json()).code, 'forbidden');
    const wrong = await logout({ 'x-csrf-token': 'x'.repeat(body.csrfToken.length) });
    assert.equal(wrong.status, 403);
    assert.equal((await me(stack, cookie)).status, 200, 'still signed in');
    // As console.js sends it.
    const ok = await fetch(`${stack.url}/admin/auth/logout`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie, 'x-csrf-token': body.csrfToken, 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(ok.status, 204);
    assert.equal(ok.headers.get('hx-redirect'), '/admin/auth/signed-out');
    const cleared = setCookie(ok, SESSION_COOKIE);
    assert.ok(cleared && !setsCookie(ok, SESSION_COOKIE), 'the cookie is cleared');
    // The browser might keep the old cookie: the server refuses it anyway.
    assert.equal((await me(stack, cookie)).status, 401);
    // Without a session, logout is a no-op.
    const none = await fetch(`${stack.url}/admin/auth/logout`, { method: 'POST' });
    assert.equal(none.status, 204);
  });

  test('a session cookie never opens /api/v1, and an API key never opens /admin', async () => {
    const cookie = await signIn(stack, 'admin@example.com');
    const jobs = await stack.api('/api/v1/jobs', { key: '', headers: { cookie } });
    assert.equal(jobs.status, 401);
    assert.equal(jobs.body.code, 'unauthorized');
    const byKey = await getJson(`${stack.url}/admin/api/me`, { headers: { authorization: `Bearer ${KEY_A}` } });
    assert.equal(byKey.status, 401);
    assert.equal(byKey.body.code, 'unauthorized');
  });

  test('with an issuer set, one-time links are refused, and npm run admin-link refuses to make one', async () => {
    assert.equal(stack.adminLink, null, 'npm start prints no link');
    const link = await getJson(`${stack.url}/admin/login?token=whatever`);
    assert.equal(link.status, 403);
    assert.equal(link.body.code, 'forbidden');
    const cli = await runAdminLink(testEnv(stack.dataDir, idp.env()));
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /ZHINIAN_OIDC_ISSUER/);
    assert.doesNotMatch(cli.stdout, /token=/);
  });
});

describe('console sign-in through OpenID Connect (confidential client)', () => {
  for (const method of ['client_secret_basic', 'client_secret_post'] as const) {
    test(`a client secret, sent by ${method} as the provider offers, signs an admin in`, async (t) => {
      let stack: Stack | undefined;
      const idp = await startOidcProvider({
        redirectUris: () => [`${stack!.url}/admin/auth/callback`],
        clientSecret: 'a-client-secret-0123456789',
        tokenEndpointAuthMethod: method,
      });
      t.after(() => idp.close());
      stack = await startStack({ env: idp.env(), worker: false });
      t.after(() => stack!.stop());
      const { status, body } = await me(stack, await signIn(stack, 'admin@example.com'));
      assert.equal(status, 200);
      assert.equal(body.user.role, 'admin');
    });
  }

  test('a provider that is down does not stop the server; sign-in answers 503 until it is reachable', async (t) => {
    // A port that was just free, with nobody listening on it now.
    const gone = await startOidcProvider({ redirectUris: [] });
    await gone.close();
    const stack = await startStack({ env: gone.env(), worker: false });
    t.after(() => stack.stop());
    const login = await fetch(`${stack.url}/admin/auth/login`, { redirect: 'manual' });
    assert.equal(login.status, 503);
    assert.match(await login.text(), /cannot be reached/);
    assert.equal((await stack.api('/api/v1/jobs')).status, 200, 'the API serves on');
    assert.equal((await fetch(`${stack.url}/admin/auth/login`, { redirect: 'manual' })).status, 503, 'tried again, not cached');
  });

  test('discovery is tried again at the next sign-in once the provider is back', async (t) => {
    let stack: Stack | undefined;
    const idp = await startOidcProvider({ redirectUris: () => [`${stack!.url}/admin/auth/callback`] });
    t.after(() => idp.close());
    idp.setDown(true);
    stack = await startStack({ env: idp.env(), worker: false });
    t.after(() => stack!.stop());
    assert.equal((await fetch(`${stack.url}/admin/auth/login`, { redirect: 'manual' })).status, 503);
    idp.setDown(false);
    const { status, body } = await me(stack, await signIn(stack, 'admin@example.com'));
    assert.equal(status, 200);
    assert.equal(body.user.role, 'admin');
  });
});

describe('console sign-in by one-time link (no issuer)', () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack({ worker: false });
  });
  after(async () => {
    await stack?.stop();
  });

  test('the link npm start prints signs in once as admin; a second use is 401', async () => {
    assert.ok(stack.adminLink);
    assert.match(stack.adminLink, new RegExp(`^${stack.url}/admin/login\\?token=[A-Za-z0-9_-]+$`));
    const first = await redeemAdminLink(stack.adminLink);
    assert.equal(first.status, 303);
    assert.equal(first.headers.get('location'), '/admin');
    const line = setCookie(first, SESSION_COOKIE)!;
    assert.ok(attributes(line).includes('httponly'));
    const { status, body } = await me(stack, line.split(';')[0]);
    assert.equal(status, 200);
    assert.deepEqual(body.user, { email: 'admin@localhost', name: 'Local admin', role: 'admin' });
    const second = await getJson(stack.adminLink);
    assert.equal(second.status, 401);
    assert.equal(second.body.code, 'unauthorized');
    assert.ok(!second.headers.getSetCookie().some((c) => c.startsWith(`${SESSION_COOKIE}=`)));
  });

  test('a made-up or missing token is 401', async () => {
    for (const p of ['/admin/login?token=made-up', '/admin/login', `/admin/login?token=${'x'.repeat(500)}`]) {
      const { status, body } = await getJson(stack.url + p);
      assert.equal(status, 401, p);
      assert.equal(body.code, 'unauthorized');
    }
  });

  test('/admin/auth/login explains the one-time links; there is no OIDC callback', async () => {
    const page = await fetch(`${stack.url}/admin/auth/login`, { redirect: 'manual' });
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    const html = await page.text();
    assert.match(html, /npm run admin-link/);
    assert.doesNotMatch(html, /<script|style=/);
    assert.equal((await getJson(`${stack.url}/admin/auth/callback?code=a&state=b`)).status, 404);
  });

  test("npm run admin-link prints the instance's real port (PORT=0 here), not the configured one", async () => {
    const cli = await runAdminLink(testEnv(stack.dataDir));
    assert.equal(cli.code, 0, cli.stderr);
    const link = cli.stdout.trim().split('\n').at(-1)!;
    assert.ok(link.startsWith(`${stack.url}/admin/login?token=`), link);
    assert.equal((await redeemAdminLink(link)).status, 303);
  });

  test('npm run admin-link prints a fresh link that signs in', async () => {
    const cli = await runAdminLink(testEnv(stack.dataDir, { ZHINIAN_PUBLIC_BASE_URL: stack.url }));
    assert.equal(cli.code, 0, cli.stderr);
    const link = cli.stdout.trim().split('\n').at(-1)!;
    assert.match(link, new RegExp(`^${stack.url}/admin/login\\?token=[A-Za-z0-9_-]+$`));
    const response = await redeemAdminLink(link);
    assert.equal(response.status, 303);
    const { body } = await me(stack, setCookie(response, SESSION_COOKIE)!.split(';')[0]);
    assert.equal(body.user.role, 'admin');
    assert.equal((await fetch(link, { redirect: 'manual' })).status, 401);
  });
});

async function runAdminLink(env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ZHINIAN_') && k !== 'DATABASE_URL' && k !== 'PORT' && k !== 'HOST'));
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/cli/admin-link.ts')], {
      cwd: ROOT,
      env: { ...clean, ...env },
      timeout: 120_000,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}
