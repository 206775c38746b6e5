// @backends sqlite,postgres
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createUrlSigner } from '../src/assets/index.ts';
import { migrateToLatest, type DbHandle } from '../src/db/index.ts';
import { createSlotTaker, takeSlot, WINDOW_MS } from '../src/jobs/rate-limit.ts';
import type { Clock } from '../src/lib/clock.ts';
import { readOrCreateSecret } from '../src/lib/secret-file.ts';
import { callApi, KEY_A, KEY_B, openTestDb, startStack, tempDir, waitFor, type Stack } from './helpers.ts';

const LIMIT = 30;

describe('job creation rate limit (ZHINIAN_RATE_LIMIT_JOBS_PER_MINUTE), held across API instances', () => {
  let first: Stack;
  let second: Stack;
  let dataDir: string;
  // 10 s into a minute; the test moves it instead of waiting.
  let now = Math.floor(Date.now() / 60_000) * 60_000 + 10_000;
  const clock: Clock = { now: () => now };
  /** An Idempotency-Key of the burst that made a job, and that job's id. */
  let kept: { key: string; jobId: string };

  before(async () => {
    dataDir = tempDir();
    const env = { ZHINIAN_RATE_LIMIT_JOBS_PER_MINUTE: String(LIMIT) };
    first = await startStack({ dataDir, worker: false, env, clock });
    second = await startStack({ dataDir, worker: false, env, clock });
  });
  after(async () => {
    await first?.stop();
    await second?.stop();
  });

  const create = (stack: Stack, i: number, init: { key?: string; headers?: Record<string, string> } = {}) =>
    callApi(stack.url, '/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: `limited ${i}`, width: 64, height: 64 }, ...init });

  test('80 concurrent creations on two instances: exactly the limit gets 201, the rest 429 with Retry-After', async () => {
    const results = await Promise.all(Array.from({ length: 80 }, (_, i) => create(i % 2 ? first : second, i, { headers: { 'idempotency-key': `burst-${i}` } })));
    const created = results.filter((r) => r.status === 201);
    const i = results.findIndex((r) => r.status === 201);
    kept = { key: `burst-${i}`, jobId: results[i].body.job.id };
    const limited = results.filter((r) => r.status === 429);
    assert.equal(created.length, LIMIT);
    assert.equal(limited.length, 80 - LIMIT);
    for (const r of limited) {
      assert.equal(r.headers.get('retry-after'), '52');
      assert.equal(r.body.code, 'rate_limited');
      assert.match(r.body.error, /at most 30 jobs per minute/);
      // The limit that refused it, as the request limit's refusals say theirs.
      assert.equal(r.headers.get('ratelimit-limit'), String(LIMIT));
      assert.equal(r.headers.get('ratelimit-remaining'), '0');
      assert.equal(r.headers.get('ratelimit-reset'), '52');
    }
    // No request limit is set here: accepted answers carry no RateLimit headers.
    for (const r of created) assert.equal(r.headers.get('ratelimit-limit'), null);
    // Both instances turned requests away: the count is shared, not per process.
    const limitedBy = new Set(results.map((r, i) => (r.status === 429 ? i % 2 : -1)).filter((x) => x >= 0));
    assert.equal(limitedBy.size, 2);

    const handle = await openTestDb(dataDir);
    try {
      const { n } = await handle.db
        .selectFrom('jobs')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('client_id', '=', 'client-a')
        .executeTakeFirstOrThrow();
      assert.equal(Number(n), LIMIT, 'no rejected request left a job behind');
      const keys = await handle.db.selectFrom('idempotency_keys').select('key').where('client_id', '=', 'client-a').execute();
      assert.equal(keys.length, LIMIT, 'nor an idempotency key (it can be retried with the same key)');
      assert.equal(await windowTotal(handle, 'jobs', 'client-a'), LIMIT, 'the refusals took their counts back');
      assert.equal(await windowTotal(handle, 'requests'), 0, 'no request limit: no request was counted');
    } finally {
      await handle.close();
    }
  });

  test('a replay of an existing Idempotency-Key is answered while limited, and another client has its own budget', async () => {
    const i = Number(kept.key.slice('burst-'.length));
    const replay = await create(first, i, { headers: { 'idempotency-key': kept.key } });
    assert.equal(replay.status, 200);
    assert.equal(replay.body.job.id, kept.jobId);
    assert.equal(replay.body.reused, true);
    assert.equal((await create(first, 999, { headers: { 'idempotency-key': 'fresh' } })).status, 429, 'a new key is still limited');
    const other = await create(first, 1000, { key: KEY_B });
    assert.equal(other.status, 201);
  });

  test('the budget comes back as the minute slides: one slot after Retry-After, not before', async () => {
    now += 51_000;
    assert.equal((await create(first, 2000)).status, 429, 'a second early');
    now += 1_000;
    assert.equal((await create(second, 2001)).status, 201);
    const again = await create(first, 2002);
    assert.equal(again.status, 429);
    assert.ok(Number(again.headers.get('retry-after')) >= 1);
    // A whole quiet minute later the full budget is back.
    now += 120_000;
    const burst = await Promise.all(Array.from({ length: LIMIT + 5 }, (_, i) => create(i % 2 ? first : second, 3000 + i)));
    assert.equal(burst.filter((r) => r.status === 201).length, LIMIT);
  });
});

/** The counts of `scope` (of one client, or all) in every window still stored. */
async function windowTotal(handle: DbHandle, scope: string, clientId?: string): Promise<number> {
  let q = handle.db
    .selectFrom('rate_windows')
    .select((eb) => eb.fn.coalesce(eb.fn.sum<number>('count'), eb.lit(0)).as('n'))
    .where('scope', '=', scope);
  if (clientId !== undefined) q = q.where('client_id', '=', clientId);
  return Number((await q.executeTakeFirstOrThrow()).n);
}

const rateHeaders = (headers: Headers) => ({
  limit: headers.get('ratelimit-limit'),
  remaining: headers.get('ratelimit-remaining'),
  reset: headers.get('ratelimit-reset'),
  retryAfter: headers.get('retry-after'),
});

describe('the sliding-minute count both limits share (takeSlot), on the database', () => {
  let handle: DbHandle;
  before(async () => {
    handle = await openTestDb(tempDir());
    await migrateToLatest(handle);
  });
  after(() => handle?.close());

  test('Remaining and Reset per take; a refusal counts nothing and says when one fits; the previous minute fades out', async () => {
    const t0 = 1_000 * WINDOW_MS + 10_000; // 10 s into a minute
    const take = (now: number, scope: 'jobs' | 'requests' = 'requests') => takeSlot(handle.db, scope, 'c', now, 4);
    // One request fades out completely at the end of the next minute: 50 s + 60 s.
    assert.deepEqual(await take(t0), { allowed: true, remaining: 3, resetSeconds: 110 });
    assert.deepEqual(await take(t0), { allowed: true, remaining: 2, resetSeconds: 80 });
    assert.deepEqual(await take(t0), { allowed: true, remaining: 1, resetSeconds: 70 });
    // The last free slot: one more fits once 4 · (1 − t/60 s) + 1 ≤ 4 in the next minute, at 15 s.
    assert.deepEqual(await take(t0), { allowed: true, remaining: 0, resetSeconds: 65 });
    assert.deepEqual(await take(t0 + 1_000), { allowed: false, remaining: 0, resetSeconds: 64 });
    assert.deepEqual(await take(t0 + 64_000), { allowed: false, remaining: 0, resetSeconds: 1 }, '14 s into the next minute: a second early');
    // 4 · 45/60 + 1 = 4: full again; the next fits once 4 · (45 − t)/60 + 2 ≤ 4, 15 s on.
    assert.deepEqual(await take(t0 + 65_000), { allowed: true, remaining: 0, resetSeconds: 15 });
    // Scopes are separate budgets.
    assert.deepEqual(await take(t0, 'jobs'), { allowed: true, remaining: 3, resetSeconds: 110 });
    assert.equal(await windowTotal(handle, 'requests', 'c'), 5, 'four, then one: the refusals took their counts back');
    // Two quiet minutes later the whole budget is back.
    assert.deepEqual(await take(t0 + 3 * WINDOW_MS), { allowed: true, remaining: 3, resetSeconds: 110 });
  });

  test('concurrent takes of one client, counted together: exactly the limit fit, in order, and the rest count nothing', async () => {
    const t0 = 2_000 * WINDOW_MS + 10_000;
    const take = createSlotTaker(handle.db, 'requests', () => t0);
    const takes = await Promise.all(Array.from({ length: 10 }, () => take('d', 4)));
    assert.deepEqual(
      takes.map((t) => [t.allowed, t.remaining]),
      [[true, 3], [true, 2], [true, 1], [true, 0], ...Array.from({ length: 6 }, () => [false, 0])],
    );
    for (const t of takes.slice(4)) assert.equal(t.resetSeconds, 65);
    // Another client's takes in the same turn are its own.
    const [mine, other] = await Promise.all([take('d', 4), take('e', 4)]);
    assert.equal(mine.allowed, false);
    assert.deepEqual(other, { allowed: true, remaining: 3, resetSeconds: 110 });
    assert.equal(await windowTotal(handle, 'requests', 'd'), 4);
  });
});

const REQUEST_LIMIT = 5;
const CLIENT_KEYS = ['c', 'd', 'e', 'f'].map((c) => `client-${c}:key-${c}-0123456789`);
const keyOf = (client: string) => `key-${client}-0123456789`;

describe('request rate limit (ZHINIAN_RATE_LIMIT_REQUESTS_PER_MINUTE), per client, held across API instances', () => {
  let first: Stack;
  let second: Stack;
  let dataDir: string;
  let handle: DbHandle;

  // Every test uses clients of its own, so no test sees another's counts. The clock is the
  // system's: each test makes a few requests quickly, so the sliding estimate is exact (a
  // minute boundary passing meanwhile changes nothing, as the previous window then still weighs ~1).
  before(async () => {
    dataDir = tempDir();
    const env = {
      ZHINIAN_RATE_LIMIT_REQUESTS_PER_MINUTE: String(REQUEST_LIMIT),
      ZHINIAN_API_KEYS: [`client-a:${KEY_A}`, `client-b:${KEY_B}`, ...CLIENT_KEYS].join(','),
    };
    first = await startStack({ dataDir, worker: false, env });
    second = await startStack({ dataDir, worker: false, env });
    handle = await openTestDb(dataDir);
  });
  after(async () => {
    await handle?.close();
    await first?.stop();
    await second?.stop();
  });

  test('every counted answer carries RateLimit-*; past the limit a 429 with Retry-After and { error, code: rate_limited }', async () => {
    for (let i = 0; i < REQUEST_LIMIT; i++) {
      // Any /api/v1 route counts, whatever it answers (the 404 too).
      const target = ['/api/v1/jobs', '/api/v1/assets', '/api/v1/capabilities', '/api/v1/jobs/job_00000000000000000000000000'][i % 4];
      const res = await first.api(target);
      assert.ok(res.status === 200 || res.status === 404, `${target}: ${res.status}`);
      const h = rateHeaders(res.headers);
      assert.equal(h.limit, String(REQUEST_LIMIT), target);
      assert.equal(h.remaining, String(REQUEST_LIMIT - 1 - i), target);
      assert.ok(Number(h.reset) >= 1 && Number(h.reset) <= 120, `RateLimit-Reset ${h.reset}`);
      assert.equal(h.retryAfter, null, 'Retry-After only on a 429');
    }
    for (const init of [{}, { method: 'POST', json: { capability: 'image.generate', prompt: 'x', width: 64, height: 64 } }]) {
      const limited = await first.api('/api/v1/jobs', init);
      assert.equal(limited.status, 429);
      assert.deepEqual(Object.keys(limited.body).sort(), ['code', 'error']);
      assert.equal(limited.body.code, 'rate_limited');
      assert.match(limited.body.error, /at most 5 requests per minute/);
      const h = rateHeaders(limited.headers);
      assert.equal(h.limit, String(REQUEST_LIMIT));
      assert.equal(h.remaining, '0');
      assert.ok(Number(h.retryAfter) >= 1 && Number(h.retryAfter) <= 120, `Retry-After ${h.retryAfter}`);
      assert.equal(h.reset, h.retryAfter);
    }
    assert.equal((await first.api('/api/v1/jobs')).body.jobs, undefined, 'still limited');
    assert.equal(await windowTotal(handle, 'jobs', 'client-a'), 0, 'the refused POST reached no handler');
  });

  test('per client: another client has its own budget while the first is limited', async () => {
    assert.equal((await first.api('/api/v1/jobs')).status, 429, 'client-a is still limited');
    const res = await first.api('/api/v1/jobs', { key: KEY_B });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('ratelimit-remaining'), String(REQUEST_LIMIT - 1));
  });

  test('counted across two API instances on one database: of 16 concurrent requests on both, exactly the limit pass', async () => {
    const results = await Promise.all(Array.from({ length: 16 }, (_, i) => (i % 2 ? first : second).api('/api/v1/jobs', { key: keyOf('c') })));
    const passed = results.filter((r) => r.status === 200);
    assert.equal(passed.length, REQUEST_LIMIT);
    assert.equal(results.filter((r) => r.status === 429).length, 16 - REQUEST_LIMIT);
    // Each instance had 8 requests and only 5 passed in all: both refused some.
    for (const parity of [0, 1])
      assert.ok(
        results.some((r, i) => i % 2 === parity && r.status === 429),
        `instance ${parity} refused some`,
      );
    assert.deepEqual(passed.map((r) => Number(r.headers.get('ratelimit-remaining'))).sort(), [0, 1, 2, 3, 4]);
    assert.equal(await windowTotal(handle, 'requests', 'client-c'), REQUEST_LIMIT, 'the refusals took their counts back');
  });

  test('not counted, and without RateLimit headers: 401s, unknown routes, public routes and signed-link downloads', async () => {
    const key = keyOf('d');
    const form = new FormData();
    form.append('files', new Blob(['mine']), 'a.txt');
    const upload = await first.api('/api/v1/assets', { method: 'POST', body: form, key });
    assert.equal(upload.status, 201);
    assert.equal(upload.headers.get('ratelimit-remaining'), String(REQUEST_LIMIT - 1));
    const assetId = upload.body.assets[0].id;
    const before = await windowTotal(handle, 'requests');

    const { expires, signature } = createUrlSigner(readOrCreateSecret(path.join(dataDir, 'signing-secret')).value).sign(assetId, 600);
    for (let i = 0; i < 2 * REQUEST_LIMIT; i++) {
      for (const [target, init, status] of [
        ['/api/v1/jobs', { key: 'not-a-key-0123456789' }, 401],
        ['/api/v1/jobs', { key: '' }, 401],
        ['/api/v1/no-such-route', { key }, 404],
        ['/healthz', { key }, 200],
        ['/readyz', { key: '' }, 200],
        ['/api/v1/openapi.json', { key }, 200],
        [`/api/v1/assets/${assetId}/download?expires=${expires}&signature=${signature}`, { key: '' }, 200],
      ] as const) {
        const res = await second.api(target, init);
        assert.equal(res.status, status, target);
        assert.deepEqual(rateHeaders(res.headers), { limit: null, remaining: null, reset: null, retryAfter: null }, target);
      }
    }
    assert.equal(await windowTotal(handle, 'requests'), before, 'nothing was counted');
    const next = await second.api('/api/v1/jobs', { key });
    assert.equal(next.headers.get('ratelimit-remaining'), String(REQUEST_LIMIT - 2), 'the client has spent only its upload');
  });

  test("a client's own limit in the clients table applies on every instance within seconds; 0 is unlimited, null the env default", async () => {
    const key = keyOf('e');
    const setLimit = async (value: number | null) => {
      const now = Date.now();
      await handle.db
        .insertInto('clients')
        .values({ id: 'client-e', rate_limit_requests_per_minute: value, created_at: now, updated_at: now })
        .onConflict((oc) => oc.column('id').doUpdateSet({ rate_limit_requests_per_minute: value, updated_at: now }))
        .execute();
    };
    const limitOn = async (stack: Stack) => (await stack.api('/api/v1/jobs', { key })).headers.get('ratelimit-limit');
    const settle = (stack: Stack, expected: string | null, what: string) => waitFor(async () => (await limitOn(stack)) === expected, { timeoutMs: 15_000, intervalMs: 100, what });

    assert.equal(await limitOn(first), String(REQUEST_LIMIT), 'the env default to begin with');
    await setLimit(2);
    for (const stack of [first, second]) await settle(stack, '2', 'the override of 2');
    // Over 2 by now (the polls counted): limited at 2, while the env default would still allow it.
    const limited = await first.api('/api/v1/jobs', { key });
    assert.equal(limited.status, 429);
    assert.match(limited.body.error, /at most 2 requests per minute/);

    await setLimit(0);
    for (const stack of [first, second]) await settle(stack, null, 'unlimited');
    const before = await windowTotal(handle, 'requests', 'client-e');
    for (let i = 0; i < 2 * REQUEST_LIMIT; i++) {
      const res = await second.api('/api/v1/jobs', { key });
      assert.equal(res.status, 200);
      assert.deepEqual(rateHeaders(res.headers), { limit: null, remaining: null, reset: null, retryAfter: null });
    }
    assert.equal(await windowTotal(handle, 'requests', 'client-e'), before, 'an unlimited client is not counted');

    await setLimit(null);
    for (const stack of [first, second]) await settle(stack, String(REQUEST_LIMIT), 'back to the env default');
  });
});

describe('request rate limit off (the default)', () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack({ worker: false });
  });
  after(() => stack?.stop());

  test('no RateLimit headers and no rows written', async () => {
    for (let i = 0; i < 10; i++) {
      const res = await stack.api('/api/v1/jobs');
      assert.equal(res.status, 200);
      assert.deepEqual(rateHeaders(res.headers), { limit: null, remaining: null, reset: null, retryAfter: null });
    }
    const handle = await openTestDb(stack.dataDir);
    try {
      assert.equal(await windowTotal(handle, 'requests'), 0);
    } finally {
      await handle.close();
    }
  });
});
