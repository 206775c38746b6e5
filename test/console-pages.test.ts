// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ENV_VARS, loadConfig } from '../src/config/index.ts';
import { dictionaries, LOCALES } from '../src/console/i18n/index.ts';
import { maskCredentials, settingsGroups } from '../src/console/pages/settings.ts';
import { API_ERROR_CODES } from '../src/console/render.ts';
import { ERR } from '../src/lib/error-codes.ts';
import { newId } from '../src/lib/ids.ts';
import { claimNextJob, retryJobLater } from '../src/queue/index.ts';
import { KEY_A, KEY_B, openTestDb, queuedJobRow, startStack, type Stack, WEBHOOK_SECRET, waitFor, waitForJob } from './helpers.ts';
import { FORGED_ROLE_ENV, forgedSessionCookie, getJson, redeemAdminLink, TEST_SESSION_SECRET } from './console-helpers.ts';

/** A console session of `role` (the one-time link gives only admin). */
async function sessionCookie(stack: Stack, role: 'admin' | 'viewer'): Promise<string> {
  const handle = await openTestDb(stack.dataDir);
  try {
    return (await forgedSessionCookie(handle, role)).cookie;
  } finally {
    await handle.db.destroy();
  }
}

/** An admin's session cookie: through the one-time sign-in link (its page, then its POST; the zero-config path), else made directly. */
async function signIn(stack: Stack): Promise<string> {
  if (stack.adminLink) {
    const res = await redeemAdminLink(stack.adminLink);
    const cookie = res.headers.getSetCookie().find((c) => c.startsWith('zhinian_console='));
    if (cookie) return cookie.split(';')[0];
  }
  return sessionCookie(stack, 'admin');
}

describe('console pages', () => {
  let stack: Stack;
  let cookie: string;
  let imageJob: string;
  let otherJob: string;
  let videoJob: string;
  let hookJob: string;
  let heldJob: string;
  const page = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(stack.url + path, { redirect: 'manual', ...init, headers: { cookie, ...(init.headers as Record<string, string>) } });
    return { res, html: await res.text() };
  };

  before(async () => {
    stack = await startStack({ env: { ZHINIAN_SESSION_SECRET: TEST_SESSION_SECRET, ...FORGED_ROLE_ENV } });
    cookie = await signIn(stack);
    const make = async (json: object, key?: string) => {
      const created = await stack.api('/api/v1/jobs', { method: 'POST', json, key });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      return created.body.job.id as string;
    };
    imageJob = await make({ capability: 'image.generate', prompt: '<script>alert(1)</script>', width: 96, height: 64 });
    otherJob = await make({ capability: 'image.generate', prompt: 'b 的任务', width: 64, height: 64 }, KEY_B);
    videoJob = await make({ capability: 'video.generate', prompt: '短视频', settings: { ratio: '16:9', duration: 4, resolution: '480p' } });
    for (const id of [imageJob, videoJob]) assert.equal((await waitForJob(stack, id)).status, 'succeeded');
    assert.equal((await waitForJob(stack, otherJob, undefined, undefined, KEY_B)).status, 'succeeded');
    // A job whose webhook receiver is down (its delivery stays pending), and one waiting to retry:
    // queued for an engine this stack's worker does not run, taken by a worker of that engine
    // (the claim transition), which failed it transiently (retryLater), as a remote worker would.
    hookJob = await make({ capability: 'image.generate', prompt: 'hook', width: 64, height: 64, webhookUrl: 'http://127.0.0.1:9/hook' });
    await waitForJob(stack, hookJob);
    const handle = await openTestDb(stack.dataDir);
    try {
      const now = Date.now();
      heldJob = newId('job');
      await handle.db
        .insertInto('jobs')
        .values(queuedJobRow({ id: heldJob, engine: 'elsewhere', created_at_us: now * 1000, run_at: now, prompt: 'held' }))
        .execute();
      const claimed = await claimNextJob(handle, { workerId: 'wrk_elsewhere', now, leaseMs: 60_000, engines: [{ engine: 'elsewhere' }] });
      assert.equal(claimed?.id, heldJob);
      const error = { code: ERR.provider_error, message: 'the provider answered 502' };
      await retryJobLater({ handle, notifier: null, jobId: heldJob, workerId: 'wrk_elsewhere', now, delayMs: 3_600_000, error });
      await waitFor(async () => (await handle.db.selectFrom('webhook_deliveries').select('id').where('job_id', '=', hookJob).executeTakeFirst()) ?? null, { what: 'a delivery' });
    } finally {
      await handle.db.destroy();
    }
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

  /** A page that must render: 200, HTML, the CSP, nothing left undefined. */
  async function good(path: string) {
    const { res, html } = await page(path);
    assert.equal(res.status, 200, `${path}: ${html.slice(0, 500)}`);
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(res.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    assert.doesNotMatch(html, /undefined|NaN|\[object Object\]/, path);
    assert.doesNotMatch(html, / style=| on[a-z]+=|hx-on/i, `${path}: inline style or handler`);
    assert.doesNotMatch(html, /<script>/, path);
    return html;
  }

  test('every screen renders in both locales, with no untranslated key', async () => {
    for (const path of [
      '/admin',
      '/admin?range=7d',
      '/admin/jobs',
      `/admin/jobs/${imageJob}`,
      `/admin/jobs/${videoJob}`,
      '/admin/assets',
      '/admin/engines',
      '/admin/settings',
      '/admin/clients',
      '/admin/clients/client-a',
      '/admin/webhooks',
      '/admin/usage',
      '/admin/audit',
    ]) {
      const zh = await good(path);
      assert.match(zh, /<html lang="zh-CN">/);
      const en = await good(`${path}${path.includes('?') ? '&' : '?'}lang=en`);
      assert.match(en, /<html lang="en">/);
      for (const html of [zh, en])
        assert.doesNotMatch(
          html,
          />\s*(nav|jobs|job|status|capability|common|assets|delivery|engines|overview|settings|shell|cl|adm|wh|usage|audit|error)\.[a-zA-Z.]+\s*</,
          `${path}: a key shows untranslated`,
        );
    }
  });

  test('the jobs list shows jobs of every client, filters narrow it, paging walks it', async () => {
    const all = await good('/admin/jobs');
    for (const id of [imageJob, otherJob, videoJob]) assert.ok(all.includes(id), id);
    const b = await good('/admin/jobs?clientId=client-b');
    assert.ok(b.includes(otherJob));
    assert.ok(!b.includes(imageJob));
    const video = await good('/admin/jobs?capability=video.generate&status=succeeded');
    assert.ok(video.includes(videoJob) && !video.includes(imageJob));
    const byId = await good(`/admin/jobs?id=${imageJob}`);
    assert.ok(byId.includes(imageJob) && !byId.includes(videoJob));
    const future = await good('/admin/jobs?from=2999-01-01T00:00');
    assert.ok(!future.includes(imageJob));
    const bad = await page('/admin/jobs?status=bogus');
    assert.equal(bad.res.status, 400);
    // Paging, one per page, keeps the filter.
    const first = await good('/admin/jobs?clientId=client-a&status=succeeded&limit=1');
    const older = /href="(\/admin\/jobs\?[^"]*before=[^"]*)"/.exec(first)?.[1].replaceAll('&amp;', '&');
    assert.ok(older, 'an Older link');
    assert.match(older, /clientId=client-a&status=succeeded&limit=1&before=job_/);
    const rows = (html: string) => html.slice(html.indexOf('<tbody>'), html.indexOf('</tbody>'));
    const second = rows(await good(older));
    assert.ok(rows(first).includes(hookJob) && !rows(first).includes(videoJob));
    assert.ok(second.includes(videoJob) && !second.includes(hookJob));
  });

  test('the job page shows the output previews, escapes the prompt, offers cancel/redeliver per role', async () => {
    const image = await good(`/admin/jobs/${imageJob}`);
    assert.match(image, /<img src="\/admin\/assets\/asset_[^"]+\/content"[^>]*data-test="output-image"/);
    assert.ok(image.includes('&lt;script&gt;alert(1)&lt;/script&gt;'));
    assert.ok(!image.includes('<script>alert(1)'));
    assert.ok(!image.includes('data-test="cancel-job"'), 'no cancel on a finished job');
    const video = await good(`/admin/jobs/${videoJob}`);
    assert.match(video, /<video controls preload="metadata" src="\/admin\/assets\/asset_[^"]+\/content" data-test="output-video"/);
    assert.equal((await page('/admin/jobs/job_nope')).res.status, 404);
    const row = await page(`/admin/jobs/${imageJob}/row`);
    assert.equal(row.res.status, 200);
    assert.match(row.html, /^\s*<tr id="job-/);
    assert.ok(!row.html.includes('data-live-job'), 'a finished row is not followed');
  });

  test('asset content: whole, ranged (206), conditional (304); the assets list pages', async () => {
    const html = await good(`/admin/jobs/${videoJob}`);
    const src = /src="(\/admin\/assets\/asset_[^"]+\/content)"/.exec(html)?.[1];
    assert.ok(src);
    const whole = await page(src);
    assert.equal(whole.res.status, 200);
    assert.equal(whole.res.headers.get('content-type'), 'video/mp4');
    assert.equal(whole.res.headers.get('accept-ranges'), 'bytes');
    const size = Number(whole.res.headers.get('content-length'));
    const part = await fetch(stack.url + src, { headers: { cookie, range: 'bytes=0-99' } });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get('content-range'), `bytes 0-99/${size}`);
    assert.equal((await part.arrayBuffer()).byteLength, 100);
    const again = await fetch(stack.url + src, { headers: { cookie, 'if-none-match': whole.res.headers.get('etag') ?? '' } });
    assert.equal(again.status, 304);
    assert.equal((await fetch(stack.url + src, { redirect: 'manual' })).status, 302, 'no session: to sign-in');
    const list = await good('/admin/assets');
    assert.match(list, /<img src="\/admin\/assets\/asset_[^"]+\/content"[^>]*loading="lazy"/);
    assert.match(list, /<video preload="none"/);
    const videos = await good('/admin/assets?kind=video');
    assert.ok(!videos.includes('<img src="/admin/assets/'));
    const onePerPage = await good('/admin/assets?limit=1');
    assert.match(onePerPage, /data-test="older"/);
  });

  test('a client upload never runs on the console origin: only raster/media inline, the rest an attachment, every answer sandboxed', async () => {
    const upload = async (name: string, body: string | Buffer, type: string) => {
      const form = new FormData();
      form.append('files', new Blob([typeof body === 'string' ? body : new Uint8Array(body)], { type }), name);
      const res = await stack.api('/api/v1/assets', { method: 'POST', body: form });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body.assets[0].id as string;
    };
    const xhtml =
      '<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><head><meta http-equiv="refresh" content="0;url=https://example.com/"/>' +
      '<script src="/admin/static/htmx.min.js"></script></head><body hx-get="/admin/api/me" hx-trigger="load">x</body></html>';
    const hostile = [
      ['page.xhtml', xhtml, 'application/xhtml+xml'],
      ['page.html', '<!doctype html><script src="/admin/static/console.js" type="module"></script><p>hi</p>', 'text/html'],
      ['image.svg', '<svg xmlns="http://www.w3.org/2000/svg" onload="fetch(\'/admin/api/me\')"><script>alert(1)</script></svg>', 'image/svg+xml'],
      ['feed.xml', '<?xml version="1.0"?><?xml-stylesheet href="/admin/static/console.css"?><feed/>', 'application/xml'],
    ] as const;
    for (const [name, body, type] of hostile) {
      const id = await upload(name, body, type);
      const { res, html } = await page(`/admin/assets/${id}/content`);
      assert.equal(res.status, 200, name);
      assert.match(res.headers.get('content-disposition') ?? '', /^attachment;/, `${name}: an attachment`);
      assert.equal(res.headers.get('content-type'), 'application/octet-stream', `${name}: served as bytes`);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', name);
      assert.match(res.headers.get('content-security-policy') ?? '', /(^|; )sandbox(;|$)/, `${name}: a sandbox CSP`);
      assert.doesNotMatch(res.headers.get('content-security-policy') ?? '', /script-src/, `${name}: no script source`);
      assert.equal(html, body, name);
      // A ranged read is just as much an attachment.
      const ranged = await fetch(`${stack.url}/admin/assets/${id}/content`, { headers: { cookie, range: 'bytes=0-9' } });
      assert.equal(ranged.status, 206);
      assert.match(ranged.headers.get('content-disposition') ?? '', /^attachment;/);
      assert.match(ranged.headers.get('content-security-policy') ?? '', /sandbox/);
    }
    // Raster images and video play inline, still sandboxed.
    const imageSrc = /<img src="(\/admin\/assets\/asset_[^"]+\/content)"/.exec(await good(`/admin/jobs/${imageJob}`))?.[1];
    const videoSrc = /src="(\/admin\/assets\/asset_[^"]+\/content)"/.exec(await good(`/admin/jobs/${videoJob}`))?.[1];
    for (const [src, type] of [
      [imageSrc, 'image/png'],
      [videoSrc, 'video/mp4'],
    ] as const) {
      assert.ok(src, type);
      const res = await fetch(stack.url + src, { headers: { cookie } });
      await res.arrayBuffer();
      assert.equal(res.headers.get('content-type'), type);
      assert.match(res.headers.get('content-disposition') ?? '', /^inline;/, type);
      assert.match(res.headers.get('content-security-policy') ?? '', /sandbox/, type);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    }
    const missing = await page('/admin/assets/asset_nope/content');
    assert.equal(missing.res.status, 404);
    assert.match(missing.res.headers.get('content-security-policy') ?? '', /sandbox/);
  });

  test("404s and errors under /admin carry the pages' CSP and security headers", async () => {
    const pageCsp = (await page('/admin')).res.headers.get('content-security-policy');
    assert.match(pageCsp ?? '', /default-src 'none'/);
    const { csrfToken } = JSON.parse((await page('/admin/api/me')).html);
    const answers = [
      ['no such page', await page('/admin/no-such-page'), 404],
      ['no such page, signed out', { res: await fetch(`${stack.url}/admin/nowhere/at/all`) }, 404],
      ['no such static file', await page('/admin/static/nope.js'), 404],
      ['no such job', await page('/admin/jobs/job_nope'), 404],
      ['a bad filter', await page('/admin/jobs?status=bogus'), 400],
      ['bad JSON', await page('/admin/api/clients', { method: 'POST', headers: { 'content-type': 'application/json', 'x-csrf-token': csrfToken }, body: '{' }), 400],
      ['a viewer-only change without CSRF', await page('/admin/api/clients', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }), 403],
      ['bad percent-encoding', await page('/admin/jobs/%E0%A4%A'), 400],
    ] as const;
    for (const [what, { res }, status] of answers) {
      assert.equal(res.status, status, what);
      assert.equal(res.headers.get('content-security-policy'), pageCsp, `${what}: the CSP`);
      assert.equal(res.headers.get('x-frame-options'), 'DENY', what);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', what);
    }
  });

  test('the overview counts the jobs, charts them, and gives run-time percentiles per engine', async () => {
    for (const range of ['24h', '7d']) {
      const html = await good(`/admin?range=${range}&lang=en`);
      assert.match(html, /data-stat="total"><div class="value">5</);
      // The job waiting to retry is running (given back, not queued).
      assert.match(html, /data-stat="queued"><div class="value"><a href="\/admin\/jobs\?status=queued">0</);
      assert.match(html, /data-stat="running"><div class="value"><a href="\/admin\/jobs\?status=running">1</);
      assert.doesNotMatch(html, /data-stat="backlog"><div class="value">0</);
      assert.match(html, /data-test="jobs-chart"/);
      assert.equal((html.match(/<rect class="bar" /g) ?? []).length, range === '24h' ? 24 : 7);
      assert.match(html, /<td class="mono">local<\/td><td class="num">4<\/td>/);
      assert.match(html, /Failure rate[^<]*/);
      assert.match(html, /data-stat="failure-rate"><div class="value">0%</);
    }
  });

  test('the engines page lists the configured engines with their circuit', async () => {
    const html = await good('/admin/engines?lang=en');
    assert.match(html, /data-engine="local"/);
    assert.match(html, /data-circuit="closed"/);
  });

  test('the settings page lists the environment variables with their units, every secret masked, no character of a key', async () => {
    const html = await good('/admin/settings?lang=en');
    for (const secret of [KEY_A, KEY_B, WEBHOOK_SECRET, TEST_SESSION_SECRET]) assert.ok(!html.includes(secret), 'a secret leaked');
    for (const key of [KEY_A, KEY_B]) assert.ok(!html.includes(`${key.slice(0, 4)}…`) && !html.includes(key.slice(0, 6)), 'no prefix of an env key');
    assert.match(
      html,
      /data-setting="ZHINIAN_WEBHOOK_SECRET"><td><span class="mono var">ZHINIAN_WEBHOOK_SECRET<\/span><br><span class="muted mono small">webhookSecret<\/span><\/td><td class="small"><span data-secret-setting>••••<\/span> <span class="badge s-succeeded">set</,
    );
    // In the unit the operator sets (seconds), not the internal milliseconds.
    assert.match(html, /data-setting="ZHINIAN_JOB_LEASE_SECONDS">.*?<span class="mono">60<\/span> <span class="muted">s<\/span>/);
    assert.match(html, /data-setting="ZHINIAN_MAX_UPLOAD_BYTES">.*?<span class="mono">52428800<\/span> <span class="muted">bytes<\/span>/);
    assert.match(html, /data-setting="ZHINIAN_API_KEYS">.*?data-secret-setting/);
    assert.match(html, /href="\/admin\/clients\/client-a">client-a<\/a>/);
    for (const name of ENV_VARS) assert.match(html, new RegExp(`data-setting="${name}"`), `${name} is listed`);
    const zh = await good('/admin/settings');
    assert.match(zh, /data-setting="ZHINIAN_JOB_LEASE_SECONDS">.*?<span class="mono">60<\/span> <span class="muted">秒<\/span>/);
    if (process.env.ZHINIAN_TEST_BACKEND === 'postgres') {
      // The test database URL names a user: masked.
      assert.match(html, /data-setting="DATABASE_URL">.*?postgres:\/\/\*\*\*\*(:\*\*\*\*)?@127\.0\.0\.1/);
    }
  });

  test('settings: credentials in URLs are masked, also odd and unparsable ones (fail closed)', () => {
    const secrets = ['alice', 's3cret', 'sslpw', 'sig0123', 'cred0123', 'minio-user', 'minio-pass', 'tok0123', 'pw0123', 'bob'];
    const config = loadConfig({
      DATABASE_URL: 'postgres://alice:s3cret@db.example:5432/app?sslpassword=sslpw&sslmode=require',
      ZHINIAN_API_KEYS: 'partner:the-env-key-value',
      ZHINIAN_S3_BUCKET: 'bucket',
      ZHINIAN_S3_ENDPOINT: 'https://minio-user:minio-pass@minio.example:9000',
      ZHINIAN_S3_ACCESS_KEY_ID: 'AKIDEXAMPLE',
      ZHINIAN_S3_SECRET_ACCESS_KEY: 'the-s3-secret',
      ZHINIAN_OIDC_ISSUER: 'https://idp.example/?token=tok0123',
      ZHINIAN_OIDC_CLIENT_ID: 'console',
      ZHINIAN_PUBLIC_BASE_URL: 'https://files.example/?X-Amz-Signature=sig0123&X-Amz-Credential=cred0123',
    });
    const text = JSON.stringify(settingsGroups(config));
    for (const secret of [...secrets.slice(0, 8), 'the-env-key-value', 'the-s3-secret', 'the-env']) assert.ok(!text.includes(secret), `${secret} leaked`);
    assert.match(text, /postgres:\/\/\*\*\*\*:\*\*\*\*@db\.example:5432\/app\?sslpassword=\*\*\*\*&sslmode=require/);
    // Not URLs a parser accepts, or not URLs at all: nothing of them shows.
    for (const value of ['postgres://bob:pw0123@[::1', 'bob:pw0123@db.example/app', 'host=db user=bob password=pw0123', 'redis://:pw0123@h', 'mysql+x://bob:pw0123@h/db']) {
      const masked = maskCredentials(value);
      assert.ok(!masked.includes('pw0123') && !masked.includes('bob'), `${value} → ${masked}`);
    }
    assert.equal(maskCredentials('https://api.example/v3'), 'https://api.example/v3');
    assert.equal(maskCredentials('ops@example.com'), 'ops@example.com');
  });

  test('a viewer sees no credential a client put in a URL: a webhook token masked on the job and webhook pages', async () => {
    // user:pass@ is refused by the API itself; a token in the query string is not.
    const refused = await stack.api('/api/v1/jobs', {
      method: 'POST',
      json: { capability: 'image.generate', prompt: 'creds', width: 64, height: 64, webhookUrl: 'http://hookuser:hookpass@127.0.0.1:9/hook' },
    });
    assert.equal(refused.status, 400);
    const created = await stack.api('/api/v1/jobs', {
      method: 'POST',
      json: { capability: 'image.generate', prompt: 'creds', width: 64, height: 64, webhookUrl: 'http://127.0.0.1:9/hook?token=hooktoken&x=1' },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.job.id as string;
    const viewer = await sessionCookie(stack, 'viewer');
    for (const path of [`/admin/jobs/${id}`, '/admin/webhooks']) {
      const html = await (await fetch(`${stack.url}${path}`, { headers: { cookie: viewer } })).text();
      for (const secret of ['hookuser', 'hookpass', 'hooktoken']) assert.ok(!html.includes(secret), `${path}: ${secret} shows`);
    }
    const html = await (await fetch(`${stack.url}/admin/jobs/${id}`, { headers: { cookie: viewer } })).text();
    assert.match(html, /http:\/\/127\.0\.0\.1:9\/hook\?token=\*\*\*\*&amp;x=1/);
  });

  test('clients: every key labelled by origin with no character of an env key, the shared webhook secret flagged with why, a new key can get an expiry', async () => {
    const envKeyTraces = [KEY_A, KEY_B].flatMap((k) => [k.slice(0, 6), `${k.slice(0, 4)}…`, createHash('sha256').update(k).digest('hex').slice(0, 8)]);
    const list = await good('/admin/clients?lang=en');
    const detail = await good('/admin/clients/client-a?lang=en');
    for (const html of [list, detail]) for (const trace of envKeyTraces) assert.ok(!html.includes(trace), `no trace of an env key (${trace})`);
    assert.match(detail, /data-test="key" data-key-origin="env">/, 'no key id on an env key');
    assert.match(detail, /data-test="key-origin">from ZHINIAN_API_KEYS</);
    assert.match(detail, /data-test="shares-webhook-secret"/);
    assert.match(detail, /data-test="shared-secret-why"[\s\S]*?must check the event&#39;s clientId/);
    assert.match(list, /data-client-id="client-a"[\s\S]*?data-test="shares-webhook-secret"/);
    assert.match(await good('/admin/clients'), /<title>[^<]*智念[^<]*<\/title>/);
    assert.match(list, /<input type="checkbox" name="adopt" data-json="boolean" data-test="adopt-client">/);

    const { csrfToken } = JSON.parse((await page('/admin/api/me')).html);
    const post = (path: string, json: unknown) =>
      page(path, { method: 'POST', headers: { 'content-type': 'application/json', 'x-csrf-token': csrfToken }, body: JSON.stringify(json) });
    const made = await post('/admin/api/clients', { id: 'pages-partner', name: 'Pages' });
    assert.equal(made.res.status, 201, made.html);
    const own = await good('/admin/clients/pages-partner?lang=en');
    assert.match(own, /<form class="filters" method="post" action="\/admin\/api\/clients\/pages-partner\/keys" data-action-form data-test="new-key">/);
    assert.match(own, /<input type="datetime-local" name="expiresAt" data-json="datetime"/);
    assert.match(own, /data-test="key" data-key-origin="console" data-key-id="key_/);
    // A refused expiry names its field in the answer, for the form to point at.
    const past = await post('/admin/api/clients/pages-partner/keys', { expiresAt: '2001-01-01T00:00:00Z' });
    assert.equal(past.res.status, 400);
    assert.deepEqual(JSON.parse(past.html), { error: 'expiresAt: must be in the future', code: 'invalid_request', field: 'expiresAt' });
    const later = new Date(Date.now() + 7 * 86_400_000).toISOString();
    const key = await post('/admin/api/clients/pages-partner/keys', { expiresAt: later });
    assert.equal(key.res.status, 201, key.html);
    assert.ok(
      (await good('/admin/clients/pages-partner')).includes(`datetime="${later}"`) || (await good('/admin/clients/pages-partner')).includes(later.slice(0, 16)),
      'the expiry shows',
    );
  });

  test('every error code an API answer can carry reads in both languages', () => {
    for (const code of API_ERROR_CODES) for (const locale of LOCALES) assert.ok(dictionaries[locale][`error.${code}`], `${locale} lacks error.${code}`);
    for (const locale of LOCALES) assert.ok(!Object.values(dictionaries[locale]).some((text) => text.includes('知念')), `${locale}: the product is 智念`);
  });

  test('a console started without ZHINIAN_API_KEYS labels its default key as generated, not as from ZHINIAN_API_KEYS', async () => {
    const generated = await startStack({ worker: false, env: { ZHINIAN_API_KEYS: '', ZHINIAN_SESSION_SECRET: TEST_SESSION_SECRET, ...FORGED_ROLE_ENV } });
    try {
      const admin = await signIn(generated);
      const get = async (path: string) => {
        const res = await fetch(generated.url + path, { headers: { cookie: admin } });
        assert.equal(res.status, 200, path);
        return res.text();
      };
      // The generated key in use: its last use shows (and is never before its creation).
      const key = fs.readFileSync(path.join(generated.dataDir, 'api-key'), 'utf8').trim();
      assert.equal((await fetch(`${generated.url}/api/v1/jobs`, { headers: { authorization: `Bearer ${key}` } })).status, 200);
      const used = await waitFor(
        async () => {
          const html = await get('/admin/clients/default?lang=en');
          return /data-test="key-last-used"><time datetime=/.test(html) ? html : null;
        },
        { timeoutMs: 30_000, intervalMs: 250, what: "the generated key's last use on its client page" },
      );
      for (const trace of [key.slice(0, 6), createHash('sha256').update(key).digest('hex').slice(0, 8)]) assert.ok(!used.includes(trace), 'no trace of the generated key');
      const detail = used;
      assert.match(detail, /data-test="key" data-key-origin="generated">/);
      assert.match(detail, /data-test="key-origin">generated at first start</);
      assert.doesNotMatch(detail, /from ZHINIAN_API_KEYS</);
      assert.match(detail, /data-test="key-origin-note">[^<]*generated at first start/);
      assert.match(detail, /data-test="key-last-used"/);
      assert.match(await get('/admin/clients?lang=en'), /badge source-generated">generated</);
    } finally {
      await generated.stop();
    }
  });

  test('a waiting job says what it waits for, follows its row by events, and offers cancel; viewers get no buttons', async () => {
    const html = await good(`/admin/jobs/${heldJob}?lang=en`);
    assert.match(html, /data-test="waiting" data-code="retry_backoff"/);
    assert.match(html, /the retry after a transient failure · next try/);
    assert.match(html, /Attempt 1 of 3 failed with a transient error/);
    // Its history: the one attempt, ended to be retried, with the error it ended with.
    assert.match(html, /<tr data-outcome="retry"><td>1<\/td><td>elsewhere<\/td>/);
    assert.match(html, /provider_error<\/span>: the provider answered 502/);
    const api = (await getJson(`${stack.url}/admin/api/jobs/${heldJob}`, { headers: { cookie } })).body;
    assert.equal(api.job.statusDetail.code, 'retry_backoff');
    assert.equal(api.attempts.length, 1);
    assert.deepEqual(Object.keys(api.attempts[0]).sort(), ['endedAt', 'engine', 'error', 'n', 'outcome', 'providerTaskId', 'startedAt']);
    assert.deepEqual(
      { ...api.attempts[0], startedAt: 0, endedAt: 0 },
      { n: 1, engine: 'elsewhere', startedAt: 0, endedAt: 0, outcome: 'retry', error: { code: 'provider_error', message: 'the provider answered 502' }, providerTaskId: null },
    );
    assert.match(html, /data-test="cancel-job" data-action-url="\/admin\/api\/jobs\/job_[^"]+\/cancel"/);
    const list = await good('/admin/jobs');
    assert.match(list, new RegExp(`<tr id="job-${heldJob}" data-status="running" data-live-job="${heldJob}">`));
    const hook = await good(`/admin/jobs/${hookJob}`);
    assert.match(hook, /data-test="redeliver" data-action-url="\/admin\/api\/deliveries\/whd_[^"]+\/redeliver"/);
    assert.match(hook, /http:\/\/127\.0\.0\.1:9\/hook/);

    const viewer = await sessionCookie(stack, 'viewer');
    for (const id of [heldJob, hookJob]) {
      const res = await fetch(`${stack.url}/admin/jobs/${id}`, { headers: { cookie: viewer } });
      assert.equal(res.status, 200);
      const text = await res.text();
      assert.ok(!text.includes('data-test="cancel-job"') && !text.includes('data-test="redeliver"'), 'a viewer sees no action');
      assert.match(text, /role-viewer/);
    }
  });
});
