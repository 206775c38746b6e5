// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Clock } from '../src/lib/clock.ts';
import { callApi, KEY_B, openTestDb, startStack, tempDir, type Stack } from './helpers.ts';

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
    }
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
