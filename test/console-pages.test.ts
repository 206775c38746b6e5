// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { dictionaries, LOCALES } from '../src/console/i18n/index.ts';
import { openTestDb, startStack, type Stack } from './helpers.ts';

const SESSION_SECRET = 'console-pages-test-session-secret-0123456789';

/** A console session cookie: through the one-time sign-in link, else (no sign-in route yet) a row of our own. */
async function signIn(stack: Stack): Promise<string> {
  if (stack.adminLink) {
    const res = await fetch(stack.adminLink, { redirect: 'manual' });
    const cookie = res.headers.getSetCookie().find((c) => c.startsWith('zhinian_console='));
    if (cookie) return cookie.split(';')[0];
  }
  const handle = await openTestDb(stack.dataDir);
  try {
    const id = randomBytes(32).toString('base64url');
    const data = { user: { email: 'ops@example.com', name: 'Ops', role: 'admin' }, csrfToken: randomBytes(24).toString('base64url') };
    await handle.db
      .insertInto('console_sessions')
      .values({ id: createHash('sha256').update(id).digest('hex'), data: JSON.stringify(data), expires_at: Date.now() + 3_600_000 })
      .execute();
    const signature = createHmac('sha256', SESSION_SECRET).update(id).digest('base64').replace(/=+$/, '');
    return `zhinian_console=${encodeURIComponent(`${id}.${signature}`)}`;
  } finally {
    await handle.db.destroy();
  }
}

describe('console pages', () => {
  let stack: Stack;
  let cookie: string;
  const page = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(stack.url + path, { redirect: 'manual', ...init, headers: { cookie, ...(init.headers as Record<string, string>) } });
    return { res, html: await res.text() };
  };

  before(async () => {
    stack = await startStack({ env: { ZHINIAN_SESSION_SECRET: SESSION_SECRET } });
    cookie = await signIn(stack);
  });
  after(async () => {
    await stack?.stop();
  });

  test('every string exists in both locales', () => {
    const keys = new Set(LOCALES.flatMap((l) => Object.keys(dictionaries[l])));
    for (const locale of LOCALES) for (const key of keys) assert.ok(dictionaries[locale][key], `${locale} lacks ${key}`);
  });

  test('the overview renders in zh-CN by default, English with ?lang=en', async () => {
    const { res, html } = await page('/admin');
    assert.equal(res.status, 200, html);
    assert.match(res.headers.get('content-type') ?? '', /text\/html/);
    assert.match(res.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    assert.match(html, /<html lang="zh-CN">/);
    assert.match(html, /概览/);
    const en = await page('/admin?lang=en');
    assert.match(en.html, /<html lang="en">/);
    assert.match(en.html, /Overview/);
    assert.match(en.res.headers.getSetCookie().join('\n'), /zhinian_lang=en/);
  });
});
