// @backends sqlite
// The console in a real browser (Debian's chromium through playwright-core) against a real OpenID
// provider on loopback: sign-in, roles, CSRF, keys, previews, actions, sign-out, cookies, the
// zero-config link and every screen in both languages. One backend: the database paths are the
// other console tests' business; this file is about what the browser sees.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import sharp from 'sharp';
import { ERR } from '../src/lib/error-codes.ts';
import { newId } from '../src/lib/ids.ts';
import { claimNextJob, reportProgress, settleJob } from '../src/queue/index.ts';
import { KEY_A, openTestDb, queuedJobRow, startReceiver, startStack, type Stack, waitFor, waitForJob } from './helpers.ts';
import { chromiumInstalled, launchBrowser, newContext, Recorder, screenshot } from './support/browser.ts';
import { startOidcProvider, TEST_PASSWORD, type TestOidcProvider } from './support/oidc-provider.ts';

const SESSION_COOKIE = 'zhinian_console';
const haveBrowser = chromiumInstalled();
// Locally a missing browser skips the file; in CI (which installs it) it fails.
const skip = !haveBrowser && !process.env.CI ? '/usr/bin/chromium is missing: apt-get install chromium fonts-wqy-microhei (CI installs them)' : false;

describe('console in a browser', { skip, timeout: 240_000 }, () => {
  let idp: TestOidcProvider;
  let sso: Stack;
  let plain: Stack;
  let browser: Browser;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  const recorder = new Recorder();
  const contexts: BrowserContext[] = [];
  let imageJob: string;
  let videoJob: string;
  let hookJob: string;
  let heldJob: string;

  const context = async (options: Parameters<typeof newContext>[2] = {}) => {
    const made = await newContext(browser, recorder, options);
    contexts.push(made);
    return made;
  };
  // The cookie's Path is /admin: ask for the cookies a URL under it gets.
  const sessionOf = async (ctx: BrowserContext, base = sso.url) => (await ctx.cookies(`${base}/admin`)).find((c) => c.name === SESSION_COOKIE);
  const me = (cookie: string, base = sso.url) => fetch(`${base}/admin/api/me`, { headers: { cookie }, redirect: 'manual' });

  /** Opens /admin, is sent to the provider's form, fills it in; returns once the form is submitted. */
  async function submitProviderForm(page: Page, login: string, password: string, start = `${sso.url}/admin`) {
    await page.goto(start);
    await page.waitForURL((url) => url.origin === idp.issuer && url.pathname.startsWith('/interaction/'));
    await page.locator('input[name="login"]').fill(login);
    await page.locator('input[name="password"]').fill(password);
    await page.locator('form#login button[type="submit"]').click();
  }

  /** A page signed in through the provider's form as `login`, on the overview (the one place a browser test signs in). */
  async function signedIn(login: string, options: Parameters<typeof newContext>[2] = {}): Promise<{ ctx: BrowserContext; page: Page }> {
    const ctx = await context(options);
    const page = await ctx.newPage();
    await submitProviderForm(page, login, TEST_PASSWORD);
    await page.waitForURL(`${sso.url}/admin`);
    return { ctx, page };
  }

  /** fetch() run inside the page (same origin, the session cookie goes along). */
  const fetchInPage = (page: Page, url: string, init: { method?: string; csrf?: boolean; body?: unknown } = {}) =>
    page.evaluate(
      async ({ url, method, csrf, body }) => {
        const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
        if (csrf) {
          const who = await (await fetch('/admin/api/me', { credentials: 'same-origin' })).json();
          headers['x-csrf-token'] = who.csrfToken;
        }
        const response = await fetch(url, { method, credentials: 'same-origin', headers, body: method === 'GET' ? undefined : JSON.stringify(body) });
        const text = await response.text();
        let json: unknown = null;
        try {
          json = JSON.parse(text);
        } catch {
          json = text;
        }
        return { status: response.status, body: json as any };
      },
      { url, method: init.method ?? 'POST', csrf: init.csrf ?? false, body: init.body ?? {} },
    );

  before(async () => {
    if (!haveBrowser) throw new Error('CI is set but /usr/bin/chromium is missing: .ci/run installs chromium and fonts-wqy-microhei');
    idp = await startOidcProvider({ redirectUris: () => [`${sso.url}/admin/auth/callback`] });
    receiver = await startReceiver();
    [sso, plain, browser] = await Promise.all([startStack({ env: idp.env() }), startStack({ worker: false }), launchBrowser()]);
    const make = async (json: object) => {
      const created = await sso.api('/api/v1/jobs', { method: 'POST', json, key: KEY_A });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      return created.body.job.id as string;
    };
    imageJob = await make({ capability: 'image.generate', prompt: '浏览器测试 image', width: 64, height: 64 });
    videoJob = await make({ capability: 'video.generate', prompt: '浏览器测试 video', settings: { ratio: '16:9', duration: 4, resolution: '480p' } });
    hookJob = await make({ capability: 'image.generate', prompt: 'hook', width: 64, height: 64, webhookUrl: receiver.url });
    // A job that stays queued: for an engine this stack's worker does not run, so it waits until it is cancelled.
    const handle = await openTestDb(sso.dataDir);
    try {
      const now = Date.now();
      heldJob = newId('job');
      await handle.db
        .insertInto('jobs')
        .values(queuedJobRow({ id: heldJob, engine: 'elsewhere', created_at_us: now * 1000, run_at: now, prompt: '等待中' }))
        .execute();
    } finally {
      await handle.db.destroy();
    }
    for (const id of [imageJob, videoJob, hookJob]) assert.equal((await waitForJob(sso, id, undefined, 90_000)).status, 'succeeded', id);
  });

  after(
    async () => {
      for (const ctx of contexts) await ctx.close().catch(() => {});
      await browser?.close().catch(() => {});
      await sso?.stop();
      await plain?.stop();
      await receiver?.close();
      await idp?.close();
    },
    { timeout: 60_000 },
  );

  test('an admin signs in through the provider form and lands on the overview', async () => {
    const { ctx, page } = await signedIn('admin@example.com');
    await page.locator('header.top nav a', { hasText: '任务' }).waitFor();
    await page.locator('.who .email', { hasText: 'admin@example.com' }).waitFor();
    assert.ok(await sessionOf(ctx), 'a session cookie');
    const cookie = await sessionOf(ctx);
    const who = await (await me(`${SESSION_COOKIE}=${cookie!.value}`)).json();
    assert.equal(who.user.role, 'admin');
  });

  test('a wrong password is refused at the provider: still its form, no session', async () => {
    const ctx = await context();
    const page = await ctx.newPage();
    await submitProviderForm(page, 'admin@example.com', 'not-the-password');
    await page.locator('p.error', { hasText: 'Invalid login or password' }).waitFor();
    assert.equal(new URL(page.url()).origin, idp.issuer);
    await page.locator('form#login input[name="password"]').waitFor();
    assert.equal(await sessionOf(ctx), undefined);
    assert.equal((await ctx.request.get(`${sso.url}/admin/api/me`)).status(), 401);
  });

  test('a user with no role gets 403 from the callback and no session', async () => {
    const ctx = await context();
    const page = await ctx.newPage();
    const callback = page.waitForResponse((r) => r.url().startsWith(`${sso.url}/admin/auth/callback`));
    await submitProviderForm(page, 'nobody@example.com', TEST_PASSWORD);
    const response = await callback;
    assert.equal(response.status(), 403);
    assert.match(await response.text(), /no role[\s\S]*\(forbidden\)/);
    assert.equal(await sessionOf(ctx), undefined);
    assert.equal((await ctx.request.get(`${sso.url}/admin/api/me`)).status(), 401);
  });

  test('a viewer sees the pages but no change buttons, and a change from the page is 403', async () => {
    const { page } = await signedIn('viewer@example.com');
    await page.locator('.who .email', { hasText: 'viewer@example.com' }).waitFor();
    await page.goto(`${sso.url}/admin/jobs/${heldJob}`);
    await page.locator('[data-test="job-status"]').waitFor();
    assert.equal(await page.locator('[data-test="cancel-job"]').count(), 0, 'no cancel button');
    await page.goto(`${sso.url}/admin/jobs/${hookJob}`);
    await page.locator('[data-delivery]').first().waitFor();
    assert.equal(await page.locator('[data-test="redeliver"]').count(), 0, 'no redeliver button');
    for (const path of ['/admin/clients', '/admin/clients/client-a', '/admin/webhooks']) {
      const response = await page.goto(`${sso.url}${path}`);
      // A missing screen is the screens test's failure; here only what a viewer is shown counts.
      if (response?.status() !== 200) continue;
      await page.locator('header.top nav').waitFor();
      for (const button of ['create-key', 'revoke-key', 'rotate-webhook-secret', 'redeliver']) {
        assert.equal(await page.locator(`[data-test="${button}"]`).count(), 0, `${path}: no ${button}`);
      }
    }
    const cancel = await fetchInPage(page, `/admin/api/jobs/${heldJob}/cancel`, { csrf: true });
    assert.equal(cancel.status, 403, JSON.stringify(cancel.body));
    assert.equal(cancel.body.code, 'forbidden');
    const created = await fetchInPage(page, '/admin/api/clients', { csrf: true, body: { id: 'viewer-made' } });
    assert.equal(created.status, 403, JSON.stringify(created.body));
    const job = await sso.api(`/api/v1/jobs/${heldJob}`, { key: KEY_A });
    assert.equal(job.body.job.status, 'queued');
  });

  test('a change without X-CSRF-Token is 403', async () => {
    const { page } = await signedIn('admin@example.com');
    const created = await fetchInPage(page, '/admin/api/clients', { csrf: false, body: { id: 'no-csrf' } });
    assert.equal(created.status, 403, JSON.stringify(created.body));
    const cancel = await fetchInPage(page, `/admin/api/jobs/${heldJob}/cancel`, { csrf: false });
    assert.equal(cancel.status, 403, JSON.stringify(cancel.body));
    const list = await fetchInPage(page, '/admin/api/clients', { method: 'GET' });
    assert.equal(list.status, 200);
    assert.ok(!list.body.clients.some((c: { id: string }) => c.id === 'no-csrf'), 'nothing was created');
    assert.equal((await sso.api(`/api/v1/jobs/${heldJob}`, { key: KEY_A })).body.job.status, 'queued');
  });

  test('a client and a key made in the Clients screen: each secret shows once, works on /api/v1, and a key revoked in the UI is refused within 5 s; a webhook secret shows once', async () => {
    const { page } = await signedIn('admin@example.com');
    page.on('dialog', (dialog) => dialog.accept());
    const dialog = page.locator('dialog[data-secret-dialog]');
    const status = async (secret: string) => (await fetch(`${sso.url}/api/v1/jobs`, { headers: { authorization: `Bearer ${secret}` } })).status;
    /** Reads the secret in the dialog, then closes it (which reloads the page). */
    const takeSecret = async (artifact: string, withWebhookSecret = false) => {
      await dialog.waitFor({ state: 'visible' });
      const secret = (await dialog.locator('[data-secret-value]').textContent())?.trim() ?? '';
      assert.match(secret, /^zk_[0-9a-z]{26}_[A-Za-z0-9_-]{43}$/);
      // A new client's own webhook signing secret is shown once beside its first key; a further key has none.
      const webhook = dialog.locator('[data-secret-webhook]');
      assert.equal(await webhook.isVisible(), withWebhookSecret, 'the webhook secret block');
      if (withWebhookSecret) assert.match((await webhook.textContent())?.trim() ?? '', /^whsec_/);
      await screenshot(page, artifact);
      await Promise.all([page.waitForEvent('load'), dialog.locator('[data-close-secret]').click()]);
      assert.ok(!(await page.content()).includes(secret), 'the secret is shown once');
      return secret;
    };

    // The new-client form: a client with its first key.
    const list = await page.goto(`${sso.url}/admin/clients`);
    assert.equal(list?.status(), 200, '/admin/clients');
    const form = page.locator('form[data-test="new-client"]');
    await form.locator('input[name="id"]').fill('browser-partner');
    await form.locator('input[name="name"]').fill('浏览器伙伴');
    await form.locator('[data-test="create-client"]').click();
    const first = await takeSecret('clients-new-client-secret', true);
    assert.equal(await status(first), 200);

    // A second key on the client's page (rotation); the first keeps working until revoked.
    const detail = await page.goto(`${sso.url}/admin/clients/browser-partner`);
    assert.equal(detail?.status(), 200, 'the client screen /admin/clients/:id');
    await page.locator('[data-test="create-key"]').first().click();
    const second = await takeSecret('client-new-key-secret');
    assert.notEqual(second, first);
    assert.equal(await status(second), 200);
    assert.equal(await status(first), 200);

    // Revoke the first key in the UI.
    const keyId = `key_${first.slice(3, 29)}`;
    const revoke = page
      .locator(`[data-test="revoke-key"][data-action-url*="${keyId}"]`)
      .or(page.locator('tr', { hasText: first.slice(0, 29) }).locator('[data-test="revoke-key"]'))
      .first();
    const revokedAt = Date.now();
    await Promise.all([page.waitForEvent('load'), revoke.click()]);
    await waitFor(async () => (await status(first)) === 401, { timeoutMs: 5_000, intervalMs: 100, what: 'the revoked key to be refused' });
    assert.ok(Date.now() - revokedAt <= 5_500);
    assert.equal(await status(second), 200, 'the other key still works');
    assert.equal(await page.locator(`[data-test="revoke-key"][data-action-url*="${keyId}"]`).count(), 0, 'a revoked key has no revoke button');
    await screenshot(page, 'client-key-revoked');

    // The client's webhook signing secret: made in the UI, shown once.
    await page.locator('[data-test="rotate-webhook-secret"]').click();
    await dialog.waitFor({ state: 'visible' });
    const whsec = (await dialog.locator('[data-secret-value]').textContent())?.trim() ?? '';
    assert.match(whsec, /^whsec_/);
    await Promise.all([page.waitForEvent('load'), dialog.locator('[data-close-secret]').click()]);
    assert.ok(!(await page.content()).includes(whsec), 'the webhook secret is shown once');
  });

  test('the job pages show the output image and a playable video (served with Range)', async () => {
    const { page } = await signedIn('admin@example.com');
    await page.goto(`${sso.url}/admin/jobs/${imageJob}`);
    const image = page.locator('img[data-test="output-image"]').first();
    await image.waitFor();
    await image.scrollIntoViewIfNeeded();
    await page.waitForFunction((el) => el instanceof HTMLImageElement && el.complete && el.naturalWidth > 0, await image.elementHandle(), { timeout: 20_000 });
    assert.equal(await image.evaluate((el) => (el as HTMLImageElement).naturalWidth), 64);
    await screenshot(page, 'job-image');

    await page.goto(`${sso.url}/admin/jobs/${videoJob}`);
    const video = page.locator('video[data-test="output-video"]').first();
    await video.waitFor();
    const src = await video.evaluate((el) => (el as HTMLVideoElement).currentSrc || (el as HTMLVideoElement).src);
    // preload=metadata may stop short of a frame: ask for one, muted so autoplay rules allow it.
    await video.evaluate((el) => {
      const v = el as HTMLVideoElement;
      v.muted = true;
      v.preload = 'auto';
      void v.play().catch(() => {});
    });
    await page.waitForFunction((el) => el instanceof HTMLVideoElement && el.readyState >= 2 && el.videoWidth > 0, await video.elementHandle(), { timeout: 30_000 });
    assert.ok(await video.evaluate((el) => (el as HTMLVideoElement).error === null));
    await screenshot(page, 'job-video');
    const partial = recorder.responses.filter((r) => r.url === src && r.status === 206);
    assert.ok(partial.length > 0, `a 206 for ${src}; seen: ${JSON.stringify(recorder.responses.filter((r) => r.url === src).map((r) => r.status))}`);
  });

  test('cancel a queued job from its page', async () => {
    const { page } = await signedIn('admin@example.com');
    page.on('dialog', (dialog) => dialog.accept());
    await page.goto(`${sso.url}/admin/jobs/${heldJob}`);
    await page.locator('[data-test="job-status"].s-queued').waitFor();
    await Promise.all([page.waitForEvent('load'), page.locator('[data-test="cancel-job"]').click()]);
    await page.locator('[data-test="job-status"].s-cancelled').waitFor();
    assert.equal(await page.locator('[data-test="cancel-job"]').count(), 0);
    assert.equal((await sso.api(`/api/v1/jobs/${heldJob}`, { key: KEY_A })).body.job.status, 'cancelled');
  });

  test('a job followed live: its page and its row change as a worker elsewhere moves it, without polling', async () => {
    // Queued for an engine no worker here runs; this test moves it with the queue's own
    // transitions, as a worker in another process would (no in-process announcement: the
    // server learns of each change from the database, as it would from that worker).
    const handle = await openTestDb(sso.dataDir);
    const liveJob = newId('job');
    try {
      const now = Date.now();
      await handle.db
        .insertInto('jobs')
        .values(queuedJobRow({ id: liveJob, engine: 'elsewhere', created_at_us: now * 1000, run_at: now, prompt: '实时' }))
        .execute();
      const { ctx, page } = await signedIn('admin@example.com');
      await page.goto(`${sso.url}/admin/jobs/${liveJob}`);
      await page.locator('[data-test="job-status"].s-queued').waitFor();
      await page.locator('[data-test="waiting"][data-code="worker"]').waitFor();

      const claimed = await claimNextJob(handle, { workerId: 'wrk_elsewhere', now: Date.now(), leaseMs: 600_000, engines: [{ engine: 'elsewhere' }] });
      assert.equal(claimed?.id, liveJob);
      // A new status: the page is rendered again by the server.
      await page.locator('[data-test="job-status"].s-running').waitFor({ timeout: 15_000 });
      await page.evaluate(() => ((window as unknown as { kept: boolean }).kept = true));
      const held = { handle, notifier: null, jobId: liveJob, workerId: 'wrk_elsewhere' };
      await reportProgress({ ...held, progress: 42, now: Date.now() });
      // Progress changes in place: no reload (the page's own state survives).
      await page.locator('[data-live-progress] progress[value="42"]').waitFor({ timeout: 15_000 });
      assert.equal(await page.evaluate(() => (window as unknown as { kept?: boolean }).kept), true);

      // The jobs list follows its running rows on one stream.
      const list = await ctx.newPage();
      await list.goto(`${sso.url}/admin/jobs`);
      const row = list.locator(`tr[data-live-job="${liveJob}"]`);
      await row.waitFor();
      await reportProgress({ ...held, progress: 77, now: Date.now() });
      await row.locator('progress[value="77"]').waitFor({ timeout: 15_000 });
      await settleJob(handle, null, { jobId: liveJob, transition: 'fail', leaseOwner: 'wrk_elsewhere', error: { code: ERR.provider_error, message: 'gone' }, now: Date.now() });
      // Ended: the row is rendered again (and followed no more); the page shows the ending too.
      await list.locator(`tr#job-${liveJob}[data-status="failed"]`).waitFor({ timeout: 15_000 });
      await page.locator('[data-test="job-status"].s-failed').waitFor({ timeout: 15_000 });
      await screenshot(page, 'job-live-ended');
    } finally {
      await handle.db.destroy();
    }
  });

  test('redeliver a webhook from the job page: the receiver gets the same delivery again', async () => {
    const { ctx, page } = await signedIn('admin@example.com');
    page.on('dialog', (dialog) => dialog.accept());
    const ofJob = () => receiver.hooks.filter((h) => h.body?.job?.id === hookJob);
    const first = await waitFor(() => ofJob()[0], { what: 'the first delivery' });
    // Wait until the first attempt is recorded (an attempt in flight is left as it is).
    await waitFor(
      async () => {
        const detail = await (await ctx.request.get(`${sso.url}/admin/api/jobs/${hookJob}`)).json();
        return detail.deliveries?.length > 0 && detail.deliveries.every((d: { status: string }) => d.status === 'delivered');
      },
      { what: 'the delivery to be recorded as delivered' },
    );
    const before = ofJob().length;
    await page.goto(`${sso.url}/admin/jobs/${hookJob}`);
    await Promise.all([page.waitForEvent('load'), page.locator('[data-test="redeliver"]').first().click()]);
    const again = await waitFor(() => ofJob()[before], { what: 'the redelivery', timeoutMs: 20_000 });
    assert.equal(again.headers['x-zhinian-delivery'], first.headers['x-zhinian-delivery']);
    assert.equal(again.body.event, first.body.event);
  });

  test('sign-out ends the session on the server', async () => {
    const { ctx, page } = await signedIn('admin@example.com');
    const old = await sessionOf(ctx);
    assert.ok(old);
    const oldCookie = `${SESSION_COOKIE}=${old.value}`;
    assert.equal((await me(oldCookie)).status, 200);
    const logout = page.waitForResponse((r) => r.url() === `${sso.url}/admin/auth/logout`);
    await page.locator('[data-test="sign-out"]').click();
    assert.equal((await logout).status(), 204);
    // console.js goes on to a signed-out page (not to sign-in, where the provider would sign the browser straight back in).
    await page.waitForURL(`${sso.url}/admin/auth/signed-out`);
    await screenshot(page, 'signed-out');
    assert.equal((await ctx.request.get(`${sso.url}/admin/api/me`)).status(), 401, 'the browser has no session');
    assert.equal((await me(oldCookie)).status, 401);
  });

  test('a tampered session cookie is refused', async () => {
    const signed = await signedIn('admin@example.com');
    const cookie = await sessionOf(signed.ctx);
    assert.ok(cookie);
    const value = decodeURIComponent(cookie.value);
    const tampered = value.slice(0, -1) + (value.endsWith('A') ? 'B' : 'A');
    // A browser that has only the tampered cookie (no provider session to sign it in again).
    const ctx = await context();
    await ctx.addCookies([{ ...cookie, value: encodeURIComponent(tampered) }]);
    assert.equal((await ctx.request.get(`${sso.url}/admin/api/me`)).status(), 401);
    const page = await ctx.newPage();
    const first = page.waitForResponse((r) => r.url() === `${sso.url}/admin`);
    await page.goto(`${sso.url}/admin`);
    const response = await first;
    assert.equal(response.status(), 302);
    assert.equal(new URL(response.headers().location, sso.url).pathname, '/admin/auth/login');
    await page.waitForURL((url) => url.origin === idp.issuer && url.pathname.startsWith('/interaction/'));
    await page.locator('form#login').waitFor();
  });

  test('a callback whose state does not match is 400 and signs nobody in', async () => {
    const ctx = await context();
    const page = await ctx.newPage();
    let callbackUrl: URL | null = null;
    // Hold the provider's redirect back (a route sees only a redirect chain's first request, so
    // the submitted form's chain is followed here, with the context's cookies, up to the callback).
    await page.route(
      (url) => url.origin === idp.issuer && url.pathname.startsWith('/interaction/'),
      async (route) => {
        if (route.request().method() !== 'POST') return route.continue();
        let response = await ctx.request.fetch(route.request(), { maxRedirects: 0 });
        for (let hop = 0; hop < 10; hop++) {
          const location = response.headers().location;
          if (!location) break;
          const next = new URL(location, response.url());
          if (next.href.startsWith(`${sso.url}/admin/auth/callback`)) {
            callbackUrl = next;
            break;
          }
          response = await ctx.request.get(next.href, { maxRedirects: 0 });
        }
        await route.fulfill({ status: 200, contentType: 'text/plain', body: 'held by the test' });
      },
    );
    await submitProviderForm(page, 'admin@example.com', TEST_PASSWORD);
    const held = await waitFor(() => callbackUrl, { what: 'the callback' });
    await page.unrouteAll();
    assert.ok(held.searchParams.get('code'), 'the provider gave a code');
    const state = held.searchParams.get('state') ?? '';
    held.searchParams.set('state', state.slice(0, -1) + (state.endsWith('x') ? 'y' : 'x'));
    const response = await page.goto(held.href);
    assert.equal(response?.status(), 400);
    assert.match((await response!.text()) ?? '', /state mismatch/);
    assert.equal(await sessionOf(ctx), undefined);
    assert.equal((await ctx.request.get(`${sso.url}/admin/api/me`)).status(), 401);
  });

  test('zero-config: the one-time link opens the overview, and not twice', async () => {
    assert.ok(plain.adminLink, 'a stack without an issuer has a sign-in link');
    const ctx = await context();
    const page = await ctx.newPage();
    await page.goto(plain.adminLink);
    // The link opens a page; only its button spends the token (a link preview's GET does not).
    await Promise.all([page.waitForURL(`${plain.url}/admin`), page.locator('[data-test="link-sign-in"]').click()]);
    await page.locator('header.top nav a', { hasText: '概览' }).waitFor();
    await screenshot(page, 'zero-config-overview');
    const other = await context();
    const again = await (await other.newPage()).goto(plain.adminLink);
    assert.equal(again?.status(), 401);
    assert.equal((await other.request.get(`${plain.url}/admin/api/me`)).status(), 401);
  });

  test('every screen renders in zh-CN (and one in English), screenshotted', async () => {
    const { page } = await signedIn('admin@example.com');
    // [artifact name, path, its h1, a label somewhere on it]
    const screens: [string, string, RegExp, string?][] = [
      ['overview', '/admin', /概览/],
      ['jobs', '/admin/jobs', /任务/],
      ['job', `/admin/jobs/${imageJob}`, /任务/],
      ['assets', '/admin/assets', /资产/],
      ['clients', '/admin/clients', /客户端与密钥/],
      ['client', '/admin/clients/client-a', /client-a/, '密钥'],
      ['webhooks', '/admin/webhooks', /Webhooks/],
      ['engines', '/admin/engines', /引擎/],
      ['usage', '/admin/usage', /用量/],
      ['audit', '/admin/audit', /审计日志/],
      ['sessions', '/admin/sessions', /登录会话/],
      ['settings', '/admin/settings', /设置/],
    ];
    // The CJK font the screenshots need (fonts-wqy-microhei, or any font covering zh).
    assert.ok(execFileSync('fc-list', [':lang=zh', 'family'], { encoding: 'utf8' }).trim().length > 0, 'a CJK font is installed (fc-list :lang=zh)');
    const failed: string[] = [];
    for (const [name, path, heading, label] of screens) {
      const response = await page.goto(`${sso.url}${path}`);
      await screenshot(page, `zh-CN-${name}`);
      if (response?.status() !== 200) {
        failed.push(`${path}: ${response?.status()}`);
        continue;
      }
      assert.equal(await page.locator('html').getAttribute('lang'), 'zh-CN', path);
      await page.locator('header.top nav a', { hasText: '任务' }).waitFor();
      const h1 =
        (await page
          .locator('main h1')
          .first()
          .textContent({ timeout: 5_000 })
          .catch(() => null)) ?? '';
      if (!heading.test(h1)) failed.push(`${path}: h1 "${h1}" is not ${heading}`);
      if (label && !(await page.locator('main').getByText(label).first().isVisible())) failed.push(`${path}: no visible "${label}"`);
    }
    const en = await page.goto(`${sso.url}/admin/jobs?lang=en`);
    assert.equal(en?.status(), 200);
    await page.locator('header.top nav a', { hasText: 'Jobs' }).waitFor();
    assert.equal(await page.locator('html').getAttribute('lang'), 'en');
    await screenshot(page, 'en-jobs');
    assert.deepEqual(failed, []);
  });

  test('an uploaded XHTML, HTML or SVG opened in the console runs no script and calls nothing; a PNG shows inline', async () => {
    const upload = async (name: string, body: string | Buffer, type: string) => {
      const form = new FormData();
      form.append('files', new Blob([typeof body === 'string' ? body : new Uint8Array(body)], { type }), name);
      const res = await sso.api('/api/v1/assets', { method: 'POST', body: form, key: KEY_A });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body.assets[0].id as string;
    };
    // What the review used: htmx from our own origin, a request with the session, a meta refresh away.
    const xhtml =
      '<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><head><meta http-equiv="refresh" content="1;url=http://127.0.0.1:9/away"/>' +
      '<script src="/admin/static/htmx.min.js"></script></head><body hx-get="/admin/api/me" hx-trigger="load" hx-target="body">pwned</body></html>';
    const ids = [
      await upload('attack.xhtml', xhtml, 'application/xhtml+xml'),
      await upload(
        'attack.html',
        '<!doctype html><meta http-equiv="refresh" content="0;url=/admin/api/me"><script src="/admin/static/console.js" type="module"></script>',
        'text/html',
      ),
      await upload('attack.svg', '<svg xmlns="http://www.w3.org/2000/svg"><script href="/admin/static/htmx.min.js"/><image href="/admin/api/me"/></svg>', 'image/svg+xml'),
    ];
    const { ctx, page } = await signedIn('admin@example.com', { acceptDownloads: true });
    const seen: string[] = [];
    ctx.on('request', (request) => seen.push(request.url()));
    for (const id of ids) {
      const url = `${sso.url}/admin/assets/${id}/content`;
      const download = page.waitForEvent('download', { timeout: 20_000 });
      // A download aborts the navigation: the page stays where it was.
      await page.goto(url).catch(() => null);
      const file = await download;
      assert.equal(file.url(), url);
      await file.cancel().catch(() => {});
    }
    // Anything the uploads started would have shown by the time a page of our own has loaded.
    const during = seen.length;
    await page.goto(`${sso.url}/admin/assets`);
    await page.locator('main h1').waitFor();
    const stray = seen.slice(0, during).filter((u) => u.includes('/admin/api/') || u.includes('/admin/static/htmx') || u.includes(':9/away'));
    assert.deepEqual(stray, [], 'the uploads made no request');
    assert.equal(new URL(page.url()).pathname, '/admin/assets');

    // A raster image is shown inline, in a sandboxed document.
    const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#3366ff' } })
      .png()
      .toBuffer();
    const pngId = await upload('blue.png', png, 'image/png');
    const response = await page.goto(`${sso.url}/admin/assets/${pngId}/content`);
    assert.equal(response?.status(), 200);
    assert.match(response?.headers()['content-security-policy'] ?? '', /sandbox/);
    assert.equal(await page.evaluate(() => (document.querySelector('img') as HTMLImageElement | null)?.naturalWidth ?? 0), 8);
  });

  test('every screen at 1280 and 390 px: no sideways scroll; on a phone the menu opens and sign-out is reachable; screenshots of both', async () => {
    const screens: [string, string][] = [
      ['overview', '/admin'],
      ['jobs', '/admin/jobs'],
      ['job', `/admin/jobs/${videoJob}`],
      ['assets', '/admin/assets'],
      ['clients', '/admin/clients'],
      ['client', '/admin/clients/client-a'],
      ['webhooks', '/admin/webhooks'],
      ['engines', '/admin/engines'],
      ['usage', '/admin/usage'],
      ['audit', '/admin/audit'],
      ['sessions', '/admin/sessions'],
      ['settings', '/admin/settings'],
    ];
    const problems: string[] = [];
    for (const width of [1280, 390]) {
      const { page } = await signedIn('admin@example.com', { viewport: { width, height: width === 390 ? 844 : 900 } });
      for (const [name, path] of screens) {
        const response = await page.goto(`${sso.url}${path}`);
        if (response?.status() !== 200) {
          problems.push(`${width}px ${path}: ${response?.status()}`);
          continue;
        }
        await page.locator('main h1').first().waitFor();
        const { scrollWidth, innerWidth } = await page.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth }));
        if (scrollWidth > innerWidth) problems.push(`${width}px ${path}: scrolls sideways (${scrollWidth} > ${innerWidth})`);
        const menu = page.locator('[data-test="menu"]');
        const signOut = page.locator('[data-test="sign-out"]');
        if (width === 390) {
          if (!(await menu.isVisible())) problems.push(`${path}: no menu button at 390 px`);
          else {
            if (await signOut.isVisible()) problems.push(`${path}: the menu is open before it is asked for`);
            await menu.click();
            await signOut.waitFor({ state: 'visible', timeout: 5_000 }).catch(() => problems.push(`${path}: sign-out not reachable from the menu`));
            if (!(await page.locator('header.top nav a', { hasText: '设置' }).isVisible())) problems.push(`${path}: the navigation is not in the menu`);
            const opened = await page.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth }));
            if (opened.scrollWidth > opened.innerWidth) problems.push(`${path}: the open menu scrolls sideways`);
            await screenshot(page, `w390-${name}-menu`);
            await menu.click();
          }
        } else {
          if (await menu.isVisible()) problems.push(`${path}: a menu button at 1280 px`);
          if (!(await signOut.isVisible())) problems.push(`${path}: no sign-out at 1280 px`);
        }
        await screenshot(page, `w${width}-${name}`);
      }
    }
    assert.deepEqual(problems, []);
  });

  test('a refused change says why in the console language and names the field; a save says it saved; a key gets an expiry', async () => {
    const { page } = await signedIn('admin@example.com');
    page.on('dialog', (dialog) => dialog.accept());
    const created = await fetchInPage(page, '/admin/api/clients', { csrf: true, body: { id: 'expiry-partner' } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    await page.goto(`${sso.url}/admin/clients/expiry-partner`);
    const flash = page.locator('[data-flash]');
    const notice = page.locator('[data-notice]');

    // An expiry in the past: refused, in Chinese, naming the field by its label.
    const form = page.locator('form[data-test="new-key"]');
    await form.locator('input[name="expiresAt"]').fill('2001-01-01T00:00');
    await form.locator('[data-test="create-key"]').click();
    await flash.waitFor({ state: 'visible' });
    const text = (await flash.textContent()) ?? '';
    assert.match(text, /^操作失败：输入无效/);
    assert.match(text, /字段“过期时间[^”]*\(expiresAt\)”/);
    assert.equal(await form.locator('input[name="expiresAt"]').getAttribute('aria-invalid'), 'true');
    await screenshot(page, 'client-key-expiry-refused');

    // A future expiry: the key is made, its secret shown once, and the page says it is done.
    const expires = new Date(Date.now() + 3 * 86_400_000);
    const local = (d: Date) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}T12:00`;
    await form.locator('input[name="expiresAt"]').fill(local(expires));
    await form.locator('[data-test="create-key"]').click();
    const dialog = page.locator('dialog[data-secret-dialog]');
    await dialog.waitFor({ state: 'visible' });
    await Promise.all([page.waitForEvent('load'), dialog.locator('[data-close-secret]').click()]);
    await notice.waitFor({ state: 'visible' });
    const keys = await fetchInPage(page, '/admin/api/clients', { method: 'GET' });
    const partner = keys.body.clients.find((c: { id: string }) => c.id === 'expiry-partner');
    const withExpiry = partner.keys.filter((k: { expiresAt: string | null }) => k.expiresAt !== null);
    assert.equal(withExpiry.length, 1, JSON.stringify(partner.keys));
    assert.equal(new Date(withExpiry[0].expiresAt).getDate(), expires.getDate());

    // A settings save: a visible, translated confirmation.
    const settings = page.locator('form[data-test="client-settings"]');
    await settings.locator('input[name="maxRunning"]').fill('3');
    await Promise.all([page.waitForEvent('load'), settings.locator('[data-test="save-settings"]').click()]);
    await notice.waitFor({ state: 'visible' });
    assert.equal((await notice.textContent())?.trim(), '设置已保存。');
    assert.equal(await page.locator('form[data-test="client-settings"] input[name="maxRunning"]').inputValue(), '3');
    await screenshot(page, 'client-settings-saved');
    // A bad value: refused naming the field, in English on the English page.
    await page.goto(`${sso.url}/admin/clients/expiry-partner?lang=en`);
    await settings.locator('input[name="weight"]').fill('0');
    await settings.locator('[data-test="save-settings"]').click();
    await flash.waitFor({ state: 'visible' });
    assert.match((await flash.textContent()) ?? '', /The action failed: Invalid input — field "Fair-sharing weight \(weight\)"/);
  });

  test('no request left loopback, no CSP violation, no page error', () => {
    assert.ok(recorder.requests.length > 50, `the run made requests (${recorder.requests.length})`);
    assert.deepEqual(recorder.offLoopback(), []);
    assert.deepEqual(recorder.cspViolations, []);
    assert.deepEqual(recorder.pageErrors, []);
  });
});
