// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { TerminalStatus } from '../src/contract/index.ts';
import type { DbHandle } from '../src/db/index.ts';
import { consoleSignIn, FORGED_ROLE_ENV, forgedSessionCookie, TEST_SESSION_SECRET } from './console-helpers.ts';
import { KEY_B, openTestDb, startReceiver, startStack, waitFor, waitForJob, type Stack } from './helpers.ts';
import { endedJob } from './usage-helpers.ts';

/** A past UTC day only the inserted rows fall on. */
const PAST_DAY = '2025-03-10';

const pastUs = Date.UTC(2025, 2, 10, 8) * 1000;

describe('console: usage, audit, webhooks and redelivery', () => {
  let stack: Stack;
  let handle: DbHandle;
  let admin: Awaited<ReturnType<typeof consoleSignIn>>;
  let failing: Awaited<ReturnType<typeof startReceiver>>;
  let ok: Awaited<ReturnType<typeof startReceiver>>;
  let failingJob: string;
  let okJob: string;

  before(async () => {
    failing = await startReceiver(() => 500);
    ok = await startReceiver(() => 200);
    stack = await startStack({ env: { ZHINIAN_SESSION_SECRET: TEST_SESSION_SECRET, ...FORGED_ROLE_ENV } });
    handle = await openTestDb(stack.dataDir);
    admin = await consoleSignIn(stack);

    // Real jobs today: two of client-a (one with a webhook to a receiver answering 500), one of client-b.
    const make = async (json: object, key?: string) => {
      const created = await stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'usage', width: 64, height: 64, ...json }, key });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      return created.body.job.id as string;
    };
    failingJob = await make({ webhookUrl: failing.url });
    const plain = await make({});
    okJob = await make({ webhookUrl: ok.url }, KEY_B);
    for (const id of [failingJob, plain]) assert.equal((await waitForJob(stack, id)).status, 'succeeded');
    assert.equal((await waitForJob(stack, okJob, undefined, undefined, KEY_B)).status, 'succeeded');

    // Rows on a past day, one per outcome, with outputs of known sizes, and ids a spreadsheet could misread.
    const rows = [
      { client: 'client-a', status: 'succeeded', engine: 'local', bytes: [1000, 200] },
      { client: 'client-a', status: 'succeeded', engine: 'local', bytes: [34] },
      { client: 'client-a', status: 'failed', engine: 'local', bytes: [] },
      { client: 'client-a', status: 'expired', engine: 'local', bytes: [] },
      { client: 'client-a', status: 'cancelled', engine: 'local', bytes: [] },
      { client: 'we,"ird', status: 'succeeded', engine: '=HYPERLINK("x")', bytes: [5] },
      { client: '@sum', status: 'failed', engine: 'local', bytes: [] },
    ];
    // Ended through queue/settle.ts, as the platform ends jobs: each is counted in the usage roll-up.
    let n = 0;
    for (const r of rows) {
      n++;
      const id = `job_0${String(n).padStart(25, '0')}`;
      await endedJob(handle, { id, clientId: r.client, engine: r.engine, createdAtUs: pastUs + n, status: r.status as TerminalStatus, outputBytes: r.bytes });
    }
    // An input of a job (not an output): never counted.
    await handle.db
      .insertInto('assets')
      .values({
        id: `asset_0${'9'.repeat(25)}`,
        client_id: 'client-a',
        kind: 'image',
        name: 'in.png',
        mime_type: 'image/png',
        bytes: 999_999,
        sha256: '0'.repeat(64),
        width: 1,
        height: 1,
        duration_seconds: null,
        source: 'upload',
        source_url: null,
        job_id: 'job_00000000000000000000000001',
        storage_key: 'kin',
        created_at_us: pastUs + 5000,
      })
      .execute();
  });
  after(async () => {
    await handle?.db.destroy();
    await stack?.stop();
    await failing?.close();
    await ok?.close();
  });

  test('usage: per client × capability × engine × day, by outcome, with output bytes; filters', async () => {
    const past = await admin('GET', `/admin/api/usage?from=${PAST_DAY}&to=${PAST_DAY}`);
    assert.equal(past.status, 200, past.text);
    const base = { day: PAST_DAY, capability: 'image.generate' };
    assert.deepEqual(past.body.rows, [
      { ...base, clientId: '@sum', engine: 'local', jobs: 1, succeeded: 0, failed: 1, expired: 0, cancelled: 0, outputBytes: 0 },
      { ...base, clientId: 'client-a', engine: 'local', jobs: 5, succeeded: 2, failed: 1, expired: 1, cancelled: 1, outputBytes: 1234 },
      { ...base, clientId: 'we,"ird', engine: '=HYPERLINK("x")', jobs: 1, succeeded: 1, failed: 0, expired: 0, cancelled: 0, outputBytes: 5 },
    ]);

    const one = await admin('GET', `/admin/api/usage?from=${PAST_DAY}&to=${PAST_DAY}&clientId=client-a`);
    assert.deepEqual(
      one.body.rows.map((r: { clientId: string }) => r.clientId),
      ['client-a'],
    );
    // The day after: nothing; the days around it with `from` alone reaching back.
    assert.deepEqual((await admin('GET', '/admin/api/usage?from=2025-03-11&to=2025-03-11')).body.rows, []);

    // Default: the last 30 days, today's real jobs among them, their outputs counted.
    const recent = await admin('GET', '/admin/api/usage');
    assert.equal(recent.status, 200);
    const today = new Date().toISOString().slice(0, 10);
    const a = recent.body.rows.find((r: { clientId: string; day: string }) => r.clientId === 'client-a' && r.day === today);
    assert.ok(a, JSON.stringify(recent.body));
    assert.equal(a.jobs, 2);
    assert.equal(a.succeeded, 2);
    assert.ok(a.outputBytes > 0, 'succeeded jobs have output bytes');
    assert.ok(
      recent.body.rows.every((r: { day: string }) => r.day !== PAST_DAY),
      'a day out of the default range is not listed',
    );
    const b = await admin('GET', '/admin/api/usage?clientId=client-b');
    assert.deepEqual(
      b.body.rows.map((r: { clientId: string; jobs: number }) => [r.clientId, r.jobs]),
      [['client-b', 1]],
    );

    for (const [query, param] of [
      ['from=2025-13-01', 'from'],
      ['from=yesterday', 'from'],
      ['to=2025-02-30', 'to'],
      ['from=2020-01-01&to=2025-01-01', 'from'],
      ['from=2025-03-12&to=2025-03-10', 'from'],
      ['bogus=1', 'bogus'],
    ]) {
      const bad = await admin('GET', `/admin/api/usage?${query}`);
      assert.equal(bad.status, 400, query);
      assert.equal(bad.body.code, 'invalid_request');
      assert.match(bad.body.error, new RegExp(param), query);
    }
  });

  test('usage CSV: header, RFC 4180 quoting, formula guard, attachment', async () => {
    const csv = await admin('GET', `/admin/usage.csv?from=${PAST_DAY}&to=${PAST_DAY}`);
    assert.equal(csv.status, 200);
    assert.match(csv.headers.get('content-type') ?? '', /^text\/csv/);
    assert.match(csv.headers.get('content-disposition') ?? '', /^attachment; filename="usage-2025-03-10-2025-03-10\.csv"/);
    const lines = csv.text.split('\r\n');
    assert.equal(lines[0], 'day,clientId,capability,engine,jobs,succeeded,failed,expired,cancelled,outputBytes');
    assert.equal(lines[1], `${PAST_DAY},'@sum,image.generate,local,1,0,1,0,0,0`);
    assert.equal(lines[2], `${PAST_DAY},client-a,image.generate,local,5,2,1,1,1,1234`);
    assert.equal(lines[3], `${PAST_DAY},"we,""ird",image.generate,"'=HYPERLINK(""x"")",1,1,0,0,0,5`);
    assert.equal(lines[4], '');
    assert.equal(lines.length, 5);
    const bad = await admin('GET', '/admin/usage.csv?from=nope');
    assert.equal(bad.status, 400);
  });

  test('webhooks: failing deliveries first, with their attempts; redeliver sends the same delivery again, audited', async () => {
    await waitFor(() => failing.hooks.length >= 1 && ok.hooks.length >= 1, { what: 'first attempts' });
    const failingDelivery = await waitFor(
      async () => {
        const { body } = await admin('GET', '/admin/api/deliveries?status=failing');
        return body.deliveries.find((d: { jobId: string; attemptLog: unknown[] }) => d.jobId === failingJob && d.attemptLog.length >= 1);
      },
      { what: 'the failing delivery recorded' },
    );
    assert.equal(failingDelivery.status, 'pending');
    assert.equal(failingDelivery.failing, true);
    assert.equal(failingDelivery.lastStatusCode, 500);
    assert.equal(failingDelivery.attemptLog[0].statusCode, 500);
    assert.ok(failingDelivery.nextAttemptAt, 'a retry is scheduled');
    const okDelivery = await waitFor(
      async () => {
        const { body } = await admin('GET', '/admin/api/deliveries?clientId=client-b');
        return body.deliveries.find((d: { status: string }) => d.status === 'delivered');
      },
      { what: 'the ok delivery delivered' },
    );
    assert.equal(okDelivery.clientId, 'client-b');
    assert.equal(okDelivery.nextAttemptAt, null);

    // Across clients, failing first although the delivered one is newer; keyset paging one at a time.
    const all = await admin('GET', '/admin/api/deliveries');
    assert.equal(all.body.deliveries[0].id, failingDelivery.id);
    assert.ok(all.body.deliveries.some((d: { id: string }) => d.id === okDelivery.id));
    const first = await admin('GET', '/admin/api/deliveries?limit=1');
    assert.equal(first.body.deliveries.length, 1);
    assert.equal(first.body.deliveries[0].id, failingDelivery.id);
    assert.ok(first.body.nextBefore);
    const seen = [first.body.deliveries[0].id];
    for (let cursor = first.body.nextBefore; cursor; ) {
      const page = await admin('GET', `/admin/api/deliveries?limit=1&before=${encodeURIComponent(cursor)}`);
      assert.equal(page.status, 200);
      seen.push(...page.body.deliveries.map((d: { id: string }) => d.id));
      cursor = page.body.nextBefore;
    }
    assert.deepEqual([...seen].sort(), all.body.deliveries.map((d: { id: string }) => d.id).sort(), 'paging gives each delivery once');
    assert.equal((await admin('GET', '/admin/api/deliveries?status=nope')).status, 400);
    assert.equal((await admin('GET', '/admin/api/deliveries?before=whd_x')).status, 400);

    // The page lists the failing delivery before the delivered one, with a redeliver button.
    const html = await admin('GET', '/admin/webhooks');
    assert.equal(html.status, 200);
    const at = html.text.indexOf(failingDelivery.id);
    assert.ok(at >= 0 && at < html.text.indexOf(okDelivery.id), 'failing first on the page');
    assert.match(html.text, /data-test="redeliver"/);
    assert.match(html.text, new RegExp(`data-action-url="/admin/api/deliveries/${okDelivery.id}/redeliver"`));

    // A change without X-CSRF-Token: refused by the guard.
    assert.equal((await admin('POST', `/admin/api/deliveries/${okDelivery.id}/redeliver`, { csrf: false })).status, 403);
    assert.equal(ok.hooks.length, 1);
    assert.equal((await admin('POST', '/admin/api/deliveries/whd_00000000000000000000000000/redeliver')).status, 404);
    assert.equal((await admin('POST', '/admin/api/deliveries/nope/redeliver')).status, 404);

    // A delivered delivery gets no retry of its own: a second request is the redelivery.
    const again = await admin('POST', `/admin/api/deliveries/${okDelivery.id}/redeliver`);
    assert.equal(again.status, 202, again.text);
    assert.equal(again.body.delivery.id, okDelivery.id);
    await waitFor(() => ok.hooks.length >= 2, { what: 'the redelivery' });
    assert.equal(ok.hooks[1].headers['x-zhinian-delivery'], okDelivery.id);
    assert.equal(ok.hooks[1].headers['x-zhinian-delivery'], ok.hooks[0].headers['x-zhinian-delivery']);
    assert.equal(ok.hooks[1].raw, ok.hooks[0].raw, 'the same bytes');
    await waitFor(async () => (await admin('GET', `/admin/api/deliveries/${okDelivery.id}`)).body.delivery.status === 'delivered', { what: 'delivered again' });

    const retried = await admin('POST', `/admin/api/deliveries/${failingDelivery.id}/redeliver`);
    assert.equal(retried.status, 202);
    await waitFor(() => failing.hooks.length >= 2, { what: 'another attempt at the failing receiver' });
    assert.ok(failing.hooks.every((h) => h.headers['x-zhinian-delivery'] === failingDelivery.id));

    // Audit: newest first, paged with nextBefore.
    const audit = await admin('GET', '/admin/api/audit');
    assert.equal(audit.status, 200);
    const [newest, older] = audit.body.entries;
    assert.equal(newest.action, 'delivery.redeliver');
    assert.equal(newest.target, failingDelivery.id);
    assert.ok(typeof newest.actor === 'string' && newest.actor.length > 0, 'the signed-in user');
    assert.match(newest.at, /^\d{4}-\d\d-\d\dT/);
    assert.equal(newest.detail.jobId, failingJob);
    assert.equal(older.target, okDelivery.id);
    assert.equal(older.detail.before.status, 'delivered');
    const page1 = await admin('GET', '/admin/api/audit?limit=1');
    assert.equal(page1.body.entries.length, 1);
    assert.equal(page1.body.entries[0].target, failingDelivery.id);
    const page2 = await admin('GET', `/admin/api/audit?limit=1&before=${page1.body.nextBefore}`);
    assert.equal(page2.body.entries[0].target, okDelivery.id);
    for (const q of ['limit=0', 'limit=201', 'limit=x', 'before=nope']) assert.equal((await admin('GET', `/admin/api/audit?${q}`)).status, 400, q);
    const auditPage = await admin('GET', '/admin/audit?limit=1');
    assert.equal(auditPage.status, 200);
    assert.match(auditPage.text, /delivery\.redeliver/);
    assert.match(auditPage.text, new RegExp(`before=${page1.body.nextBefore}`));

    // An attempt in flight (a lease that has not lapsed) is left to its sender: answered as it is.
    const leaseEnd = Date.now() + 600_000;
    await handle.db.updateTable('webhook_deliveries').set({ status: 'pending', lease_owner: 'wrk_elsewhere', next_attempt_at: leaseEnd }).where('id', '=', okDelivery.id).execute();
    const flying = await admin('POST', `/admin/api/deliveries/${okDelivery.id}/redeliver`);
    assert.equal(flying.status, 202);
    assert.equal(flying.body.delivery.inFlight, true);
    const row = await handle.db.selectFrom('webhook_deliveries').select(['lease_owner', 'next_attempt_at']).where('id', '=', okDelivery.id).executeTakeFirstOrThrow();
    assert.equal(row.lease_owner, 'wrk_elsewhere');
    assert.equal(Number(row.next_attempt_at), leaseEnd);
    assert.equal((await admin('GET', '/admin/api/audit?limit=1')).body.entries[0].detail.outcome, 'inFlight');
  });

  test('pages render in zh-CN and English, without undefined', async () => {
    const paths = [
      '/admin/clients',
      '/admin/clients/client-a',
      '/admin/webhooks',
      '/admin/webhooks?status=failing',
      '/admin/usage',
      `/admin/usage?from=${PAST_DAY}&to=${PAST_DAY}`,
      '/admin/audit',
    ];
    for (const p of paths) {
      for (const lang of ['', 'lang=en']) {
        const url = lang ? `${p}${p.includes('?') ? '&' : '?'}${lang}` : p;
        const res = await admin('GET', url);
        assert.equal(res.status, 200, `${url}: ${res.text.slice(0, 300)}`);
        assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
        assert.doesNotMatch(res.text, /undefined|NaN|\[object Object\]/, url);
        assert.doesNotMatch(res.text, /<script(?![^>]*\ssrc=)/, `${url}: no inline script`);
        assert.doesNotMatch(res.text, /\sstyle="|\son[a-z]+="|hx-on/, `${url}: no inline style or handlers`);
        assert.match(res.text, lang ? /lang="en"/ : /lang="zh-CN"/);
      }
    }
    const clients = await admin('GET', '/admin/clients');
    assert.match(clients.text, /client-a/);
    const detail = await admin('GET', '/admin/clients/client-a');
    assert.doesNotMatch(detail.text, /data-test="create-key"/, 'an env client has no key controls');
    assert.match(detail.text, /data-test="rotate-webhook-secret"/);
    assert.equal((await admin('GET', '/admin/clients/no-such-client')).status, 404);
    const usage = await admin('GET', `/admin/usage?from=${PAST_DAY}&to=${PAST_DAY}&lang=en`);
    assert.match(usage.text, /<svg/);
    assert.match(usage.text, /we,&#34;ird|we,&quot;ird/);
    assert.equal((await admin('GET', '/admin/usage?from=bad')).status, 400);
  });

  test('a viewer sees no change controls and cannot redeliver', async () => {
    const { cookie, csrfToken: viewerCsrf } = await forgedSessionCookie(handle, 'viewer');
    const get = async (p: string) => {
      const res = await fetch(stack.url + p, { headers: { cookie }, redirect: 'manual' });
      return { status: res.status, text: await res.text() };
    };
    await admin('POST', '/admin/api/clients', { json: { id: 'partner-viewed' } });
    for (const p of ['/admin/webhooks', '/admin/clients', '/admin/clients/partner-viewed', '/admin/clients/client-a']) {
      const page = await get(p);
      assert.equal(page.status, 200, p);
      assert.doesNotMatch(page.text, /data-test="(redeliver|revoke-key|create-key|rotate-webhook-secret|create-client|save-settings)"/, p);
      assert.doesNotMatch(page.text, /data-action-url=/, p);
    }
    const { body } = await admin('GET', '/admin/api/deliveries');
    const refused = await fetch(`${stack.url}/admin/api/deliveries/${body.deliveries[0].id}/redeliver`, { method: 'POST', headers: { cookie, 'x-csrf-token': viewerCsrf } });
    assert.equal(refused.status, 403);
  });

  test('a console client: key controls shown, created keys listed', async () => {
    const created = await admin('POST', '/admin/api/clients', { json: { id: 'partner-admin', name: 'Partner' } });
    assert.equal(created.status, 201, created.text);
    const page = await admin('GET', '/admin/clients/partner-admin');
    assert.equal(page.status, 200);
    assert.match(page.text, /data-test="create-key"/);
    assert.match(page.text, /data-test="revoke-key"/);
    assert.match(page.text, new RegExp(`/admin/api/keys/${created.body.key.id}/revoke`));
    assert.equal(page.text.includes(created.body.key.secret), false, 'the secret is never shown again');
    const list = await admin('GET', '/admin/clients?lang=en');
    assert.match(list.text, /partner-admin/);
  });
});
