// @backends sqlite,postgres
// The console's trust decisions: only verified identities get a role, role changes reach live
// sessions, sessions can be ended by an admin, one-time links are spent only by their page's
// POST, the __Host- cookie behind https, and two session cookies are refused.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { consoleSignIn, getJson, redeemAdminLink } from './console-helpers.ts';
import { createLoginTokens } from '../src/console/login-tokens.ts';
import { systemClock } from '../src/lib/clock.ts';
import { openTestDb, startStack, tempDir, type Stack } from './helpers.ts';
import { signInOverHttp, startOidcProvider, type TestOidcProvider, TEST_PASSWORD } from './support/oidc-provider.ts';

const SESSION_COOKIE = 'zhinian_console';

/** A new one-time link for `stack` (as npm run admin-link makes one). */
async function freshLink(stack: Stack): Promise<string> {
  const handle = await openTestDb(stack.dataDir);
  const token = await createLoginTokens(handle, systemClock).issue();
  await handle.close();
  return `${stack.url}/admin/login?token=${token}`;
}

const me = (stack: Stack, cookie: string) => getJson(`${stack.url}/admin/api/me`, { headers: { cookie } });

/** Signs `login` in through the provider; the session cookie (`name=value`), or the refusal. */
async function oidcSignIn(stack: Stack, login: string): Promise<{ status: number; cookie: string | null }> {
  const result = await signInOverHttp(stack.url, login, TEST_PASSWORD);
  assert.equal(result.kind, 'callback');
  if (result.kind !== 'callback') throw new Error('unreachable');
  const value = result.jar.get(stack.url, SESSION_COOKIE);
  return { status: result.response.status, cookie: value ? `${SESSION_COOKIE}=${value}` : null };
}

describe('console: only verified identities get a role', () => {
  let idp: TestOidcProvider;
  let stack: Stack;
  let lenient: Stack;
  before(async () => {
    const stacks: Stack[] = [];
    idp = await startOidcProvider({ redirectUris: () => stacks.map((s) => `${s.url}/admin/auth/callback`) });
    stack = await startStack({ env: idp.env(), worker: false });
    lenient = await startStack({ env: { ...idp.env(), ZHINIAN_OIDC_ALLOW_UNVERIFIED_EMAIL: 'true' }, worker: false });
    stacks.push(stack, lenient);
  });
  after(async () => {
    await stack?.stop();
    await lenient?.stop();
    await idp?.close();
  });

  test('a listed address whose ID token has no email_verified gets 403 and no cookie', async () => {
    const refused = await oidcSignIn(stack, 'noclaim@example.com');
    assert.equal(refused.status, 403);
    assert.equal(refused.cookie, null);
  });

  test('ZHINIAN_OIDC_ALLOW_UNVERIFIED_EMAIL=true lets a missing claim count, never an explicit false', async () => {
    const allowed = await oidcSignIn(lenient, 'noclaim@example.com');
    assert.equal(allowed.status, 302);
    assert.equal((await me(lenient, allowed.cookie!)).body.user.role, 'admin');
    const unverified = await oidcSignIn(lenient, 'unverified@example.com');
    assert.equal(unverified.status, 403);
  });

  test('a role from a group with an unverified e-mail: the audit actor is the subject, not the address', async () => {
    const signedIn = await oidcSignIn(stack, 'group-unverified@example.com');
    assert.equal(signedIn.status, 302);
    const who = await me(stack, signedIn.cookie!);
    assert.equal(who.body.user.role, 'admin');
    assert.equal(who.body.user.email, 'sub:group-unverified@example.com', 'the unverified address is not who acted');
    const made = await fetch(`${stack.url}/admin/api/clients`, {
      method: 'POST',
      headers: { cookie: signedIn.cookie!, 'x-csrf-token': who.body.csrfToken, 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'audited-by-sub' }),
    });
    assert.equal(made.status, 201);
    const audit = await getJson(`${stack.url}/admin/api/audit`, { headers: { cookie: signedIn.cookie! } });
    const entry = audit.body.entries.find((e: any) => e.target === 'audited-by-sub');
    assert.equal(entry.actor, 'sub:group-unverified@example.com');
  });
});

describe('console: a role change reaches live sessions', () => {
  let idp: TestOidcProvider;
  const stacks: Stack[] = [];
  const dataDir = tempDir();
  const start = async (env: Record<string, string>) => {
    const stack = await startStack({ dataDir, env: { ...idp.env(), ...env }, worker: false });
    stacks.push(stack);
    return stack;
  };
  before(async () => {
    idp = await startOidcProvider({ redirectUris: () => stacks.map((s) => `${s.url}/admin/auth/callback`) });
  });
  after(async () => {
    for (const stack of stacks) await stack.stop();
    await idp?.close();
  });

  test('an admin moved to the viewer list is a viewer at the next request; taken off every list, the session ends', async () => {
    const original = await start({});
    const { cookie } = await oidcSignIn(original, 'admin@example.com');
    assert.equal((await me(original, cookie!)).body.user.role, 'admin');
    // The same database under new role settings (a restart, or another instance already on them).
    const demoted = await start({ ZHINIAN_ADMIN_EMAILS: '', ZHINIAN_VIEWER_EMAILS: 'admin@example.com' });
    const asViewer = await me(demoted, cookie!);
    assert.equal(asViewer.status, 200);
    assert.equal(asViewer.body.user.role, 'viewer');
    const change = await fetch(`${demoted.url}/admin/api/clients`, {
      method: 'POST',
      headers: { cookie: cookie!, 'x-csrf-token': asViewer.body.csrfToken, 'content-type': 'application/json' },
      body: '{"id":"not-allowed"}',
    });
    assert.equal(change.status, 403, 'the downgraded session may not change anything');
    const removed = await start({ ZHINIAN_ADMIN_EMAILS: '', ZHINIAN_VIEWER_EMAILS: '' });
    assert.equal((await me(removed, cookie!)).status, 401);
    assert.equal((await me(original, cookie!)).status, 401, 'ended for good, on every instance');
  });

  test('a one-time link session ends once the console signs in through an identity provider', async () => {
    const local = await startStack({ dataDir: tempDir(), worker: false });
    stacks.push(local);
    const admin = await consoleSignIn(local);
    assert.equal((await admin('GET', '/admin/api/me')).status, 200);
    const withSso = await startStack({ dataDir: local.dataDir, env: idp.env(), worker: false });
    stacks.push(withSso);
    assert.equal((await me(withSso, admin.cookie)).status, 401);
  });
});

describe('console: an admin ends sessions', () => {
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

  test("all sessions of one user, then every session (the admin's own too); audited; a viewer may not", async () => {
    const admin = (await oidcSignIn(stack, 'admin@example.com')).cookie!;
    const viewerA = (await oidcSignIn(stack, 'viewer@example.com')).cookie!;
    const viewerB = (await oidcSignIn(stack, 'viewer@example.com')).cookie!;
    const { csrfToken } = (await me(stack, admin)).body;
    const viewerCsrf = (await me(stack, viewerA)).body.csrfToken;
    const post = (cookie: string, csrf: string, body: unknown) =>
      getJson(`${stack.url}/admin/api/sessions/end`, { method: 'POST', headers: { cookie, 'x-csrf-token': csrf, 'content-type': 'application/json' }, body: JSON.stringify(body) });

    const list = await getJson(`${stack.url}/admin/api/sessions`, { headers: { cookie: admin } });
    assert.equal(list.status, 200);
    assert.equal(list.body.sessions.filter((s: any) => s.user.email === 'viewer@example.com').length, 2);
    assert.ok(!JSON.stringify(list.body).includes(admin.split('=')[1]), 'the list shows no session id');

    assert.equal((await post(viewerA, viewerCsrf, { all: true })).status, 403, 'a viewer changes nothing');
    assert.equal((await post(admin, csrfToken, { user: 'viewer@example.com', all: true })).status, 400);
    const ended = await post(admin, csrfToken, { user: 'viewer@example.com' });
    assert.deepEqual(ended.body, { ended: 2 });
    assert.equal((await me(stack, viewerA)).status, 401);
    assert.equal((await me(stack, viewerB)).status, 401);
    assert.equal((await me(stack, admin)).status, 200, 'other users keep theirs');

    const all = await post(admin, csrfToken, { all: true });
    assert.deepEqual(all.body, { ended: 1 });
    assert.equal((await me(stack, admin)).status, 401);

    const again = (await oidcSignIn(stack, 'admin@example.com')).cookie!;
    const audit = await getJson(`${stack.url}/admin/api/audit`, { headers: { cookie: again } });
    const ends = audit.body.entries.filter((e: any) => e.action === 'session.end');
    assert.deepEqual(
      ends.map((e: any) => [e.actor, e.target, e.detail.ended]),
      [
        ['admin@example.com', '*', 1],
        ['admin@example.com', 'viewer@example.com', 2],
      ],
    );
  });
});

describe('console: one-time links and session cookies', () => {
  let stack: Stack;
  let secure: Stack;
  before(async () => {
    stack = await startStack({ worker: false });
    // Served over http on loopback, published as https (a TLS proxy in front): cookies follow the public URL.
    secure = await startStack({ worker: false, env: { ZHINIAN_PUBLIC_BASE_URL: 'https://console.example.test' } });
  });
  after(async () => {
    await stack?.stop();
    await secure?.stop();
  });

  test("a link preview's GET and HEAD leave the link working; only the page's POST spends it", async () => {
    const link = stack.adminLink!;
    for (let i = 0; i < 2; i++) {
      const preview = await fetch(link, { redirect: 'manual' });
      assert.equal(preview.status, 200);
      assert.ok(!preview.headers.getSetCookie().some((c) => c.startsWith(`${SESSION_COOKIE}=`)), 'a GET signs nobody in');
      assert.match(preview.headers.get('content-security-policy') ?? '', /default-src 'none'/);
      assert.equal(preview.headers.get('referrer-policy'), 'no-referrer');
      assert.match(await preview.text(), /<form method="post" action="\/admin\/login">/);
    }
    assert.equal((await fetch(link, { method: 'HEAD', redirect: 'manual' })).status, 200);
    const signedIn = await redeemAdminLink(link);
    assert.equal(signedIn.status, 303);
    assert.ok(signedIn.headers.getSetCookie().some((c) => c.startsWith(`${SESSION_COOKIE}=`)));
    assert.equal((await fetch(link, { redirect: 'manual' })).status, 401, 'spent');
  });

  test('a POST that did not come from the link page (no page cookie, or another nonce) is refused and spends nothing', async () => {
    const token = new URL(await freshLink(stack)).searchParams.get('token')!;
    const form = (fields: Record<string, string>, cookie?: string) =>
      fetch(`${stack.url}/admin/login`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...(cookie ? { cookie } : {}) },
        body: new URLSearchParams(fields).toString(),
      });
    const bare = await form({ token, nonce: 'x' });
    assert.equal(bare.status, 403);
    assert.equal((await bare.json()).code, 'forbidden');
    const page = await fetch(`${stack.url}/admin/login?token=${token}`);
    const pageCookie = page.headers
      .getSetCookie()
      .find((c) => c.startsWith('zhinian_link='))!
      .split(';')[0];
    assert.equal((await form({ token, nonce: 'not-the-page-nonce' }, pageCookie)).status, 403);
    // Still unspent: the link's own page signs in.
    assert.equal((await redeemAdminLink(`${stack.url}/admin/login?token=${token}`)).status, 303);
  });

  test('behind https the session cookie is __Host- prefixed: Secure, Path=/, no Domain', async () => {
    const link = secure.adminLink!.replace('https://console.example.test', secure.url);
    const signedIn = await redeemAdminLink(link);
    assert.equal(signedIn.status, 303);
    const line = signedIn.headers.getSetCookie().find((c) => c.startsWith(`__Host-${SESSION_COOKIE}=`));
    assert.ok(line, `a __Host- cookie: ${signedIn.headers.getSetCookie().join(' | ')}`);
    const attrs = line.split(';').map((a) => a.trim().toLowerCase());
    assert.ok(attrs.includes('secure'));
    assert.ok(attrs.includes('path=/'));
    assert.ok(attrs.includes('httponly'));
    assert.ok(!attrs.some((a) => a.startsWith('domain=')));
    const cookie = line.split(';')[0];
    assert.equal((await me(secure, cookie)).status, 200);
    // The plain name is not read behind https: a cookie planted without the prefix opens nothing.
    assert.equal((await me(secure, cookie.replace(`__Host-${SESSION_COOKIE}`, SESSION_COOKIE))).status, 401);
  });

  test('the sessions screen lists who is signed in, with end buttons for an admin (zh-CN and English)', async () => {
    const admin = await consoleSignIn({ ...stack, adminLink: await freshLink(stack) });
    for (const lang of ['zh-CN', 'en']) {
      const page = await admin('GET', `/admin/sessions?lang=${lang}`);
      assert.equal(page.status, 200);
      assert.match(page.text, /admin@localhost/);
      assert.match(page.text, /data-test="end-all-sessions"/);
      assert.match(page.text, /data-test="end-user-sessions"/);
      assert.doesNotMatch(page.text, /sess\.[a-z]/, 'every string translated');
    }
  });

  test('a request with two session cookies is refused (400) and both are cleared, whatever their order', async () => {
    const admin = await consoleSignIn({ ...stack, adminLink: await freshLink(stack) });
    const [name, value] = admin.cookie.split('=');
    for (const cookie of [`${name}=${value}; ${name}=planted`, `${name}=planted; ${name}=${value}`]) {
      const refused = await getJson(`${stack.url}/admin/api/me`, { headers: { cookie } });
      assert.equal(refused.status, 400);
      assert.equal(refused.body.code, 'invalid_request');
      assert.ok(refused.headers.getSetCookie().some((c) => c.startsWith(`${SESSION_COOKIE}=;`)));
      const page = await fetch(`${stack.url}/admin/jobs`, { headers: { cookie }, redirect: 'manual' });
      assert.equal(page.status, 400, 'pages too, not a redirect loop');
    }
    assert.equal((await me(stack, admin.cookie)).status, 200, 'the real session alone still works');
  });
});
