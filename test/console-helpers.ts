import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import type { DbHandle } from '../src/db/index.ts';
import type { Stack } from './helpers.ts';

/** A session secret for stacks whose tests forge sessions (ZHINIAN_SESSION_SECRET). */
export const TEST_SESSION_SECRET = 'console-test-session-secret-0123456789abcdef';

/**
 * An admin session from the stack's one-time link (the zero-config path): a caller of /admin
 * with its cookie and, unless told not to, its CSRF token. Bodies that are not JSON (HTML, CSV)
 * come back as text.
 */
export async function consoleSignIn(stack: Stack) {
  assert.ok(stack.adminLink, 'the stack printed a one-time sign-in link');
  const res = await fetch(stack.adminLink, { redirect: 'manual' });
  assert.equal(res.status, 302);
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
 * A session cookie of `role` made the way console/session.ts does (a row by the id's hash, the
 * id signed in the cookie), for roles the one-time link does not give. The stack must run with
 * ZHINIAN_SESSION_SECRET = TEST_SESSION_SECRET.
 */
export async function forgedSessionCookie(handle: DbHandle, role: 'admin' | 'viewer'): Promise<{ cookie: string; csrfToken: string }> {
  const id = randomBytes(32).toString('base64url');
  const data = { user: { email: `${role}@example.com`, name: role, role }, csrfToken: randomBytes(24).toString('base64url') };
  await handle.db
    .insertInto('console_sessions')
    .values({ id: createHash('sha256').update(id).digest('hex'), data: JSON.stringify(data), expires_at: Date.now() + 3_600_000 })
    .execute();
  const signature = createHmac('sha256', TEST_SESSION_SECRET).update(id).digest('base64').replace(/=+$/, '');
  return { cookie: `zhinian_console=${encodeURIComponent(`${id}.${signature}`)}`, csrfToken: data.csrfToken };
}
