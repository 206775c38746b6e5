import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import type { DbHandle } from '../src/db/index.ts';
import type { Stack } from './helpers.ts';

/** The role lists that give forged sessions (forgedSessionCookie) their roles. */
export const FORGED_ROLE_ENV = { ZHINIAN_ADMIN_EMAILS: 'admin@example.com', ZHINIAN_VIEWER_EMAILS: 'viewer@example.com' };

/** A session secret for stacks whose tests forge sessions (ZHINIAN_SESSION_SECRET). */
export const TEST_SESSION_SECRET = 'console-test-session-secret-0123456789abcdef';

/**
 * An admin session from the stack's one-time link (the zero-config path): a caller of /admin
 * with its cookie and, unless told not to, its CSRF token. Bodies that are not JSON (HTML, CSV)
 * come back as text.
 */
export async function consoleSignIn(stack: Stack) {
  assert.ok(stack.adminLink, 'the stack printed a one-time sign-in link');
  const res = await redeemAdminLink(stack.adminLink);
  assert.equal(res.status, 303);
  const cookie = res.headers.getSetCookie().find((c) => c.startsWith('zhinian_console='));
  assert.ok(cookie, 'a session cookie');
  const jar = cookie.split(';')[0];
  const me = await fetch(`${stack.url}/admin/api/me`, { headers: { cookie: jar } });
  const { csrfToken } = (await me.json()) as { csrfToken: string };
  const call = async (method: string, p: string, opts: { json?: unknown; csrf?: boolean } = {}) => {
    const headers: Record<string, string> = { cookie: jar };
    if (opts.csrf !== false) headers['x-csrf-token'] = csrfToken;
    if (opts.json !== undefined) headers['content-type'] = 'application/json';
    const answer = await fetch(`${stack.url}${p}`, { method, headers, body: opts.json === undefined ? undefined : JSON.stringify(opts.json), redirect: 'manual' });
    const text = await answer.text();
    let body: any = text;
    try {
      body = JSON.parse(text);
    } catch {
      // HTML or CSV: kept as text
    }
    return { status: answer.status, body, text, headers: answer.headers };
  };
  return Object.assign(call, { cookie: jar });
}

/**
 * Uses a one-time sign-in link as a browser does: the link's page (GET), then its form's POST
 * with the page's cookie. The answer to the POST (303 and a session cookie when it worked).
 */
export async function redeemAdminLink(link: string): Promise<Response> {
  const page = await fetch(link, { redirect: 'manual' });
  assert.equal(page.status, 200, 'the link opens a page');
  const html = await page.text();
  const field = (name: string) => new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1] ?? '';
  const linkCookie = page.headers.getSetCookie().find((c) => c.startsWith('zhinian_link='));
  assert.ok(linkCookie, "the link page's cookie");
  return fetch(new URL('/admin/login', link), {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: linkCookie.split(';')[0] },
    body: new URLSearchParams({ token: field('token'), nonce: field('nonce') }).toString(),
  });
}

/**
 * A session cookie of `role` made the way console/session.ts does (a row by the id's hash, the
 * id signed in the cookie), for roles the one-time link does not give. The stack must run with
 * ZHINIAN_SESSION_SECRET = TEST_SESSION_SECRET.
 */
export async function forgedSessionCookie(handle: DbHandle, role: 'admin' | 'viewer'): Promise<{ cookie: string; csrfToken: string }> {
  const id = randomBytes(32).toString('base64url');
  const email = `${role}@example.com`;
  // Signed in through a provider as `email` (verified): the stack's role lists must give it `role` (FORGED_ROLE_ENV).
  const grant = { via: 'oidc', identity: { subject: `sub-${role}`, email, emailVerified: true, groups: [] } };
  const data = { user: { email, name: role, role }, csrfToken: randomBytes(24).toString('base64url'), grant };
  await handle.db
    .insertInto('console_sessions')
    .values({ id: createHash('sha256').update(id).digest('hex'), data: JSON.stringify(data), expires_at: Date.now() + 3_600_000, user_key: email, created_at: Date.now() })
    .execute();
  const signature = createHmac('sha256', TEST_SESSION_SECRET).update(id).digest('base64').replace(/=+$/, '');
  return { cookie: `zhinian_console=${encodeURIComponent(`${id}.${signature}`)}`, csrfToken: data.csrfToken };
}

/** A request without following redirects; the body parsed as JSON when it is JSON, else the text. */
export async function getJson(url: string, init: RequestInit = {}) {
  const response = await fetch(url, { redirect: 'manual', ...init });
  const text = await response.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: response.status, body, headers: response.headers };
}
