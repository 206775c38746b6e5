// @backends sqlite,postgres
// The console's usage comes from the daily roll-up written in the transaction that ends a job
// (queue/usage-rollup.ts), never from a scan of jobs: every settlement counts, once, and the
// roll-up equals what a scan of the ended jobs gives; the migration back-fills it the same way.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { migrateToLatest, type DbHandle } from '../src/db/index.ts';
import * as usageMigration from '../src/db/migrations/0007-usage-rollup.ts';
import { newId } from '../src/lib/ids.ts';
import { sweepDeadlines } from '../src/queue/deadlines.ts';
import { settleJob } from '../src/queue/settle.ts';
import { type Settlement, TRANSITIONS } from '../src/queue/transitions.ts';
import { usageDay } from '../src/queue/usage-rollup.ts';
import { consoleSignIn } from './console-helpers.ts';
import { transact } from '../src/queue/changes.ts';
import { claimJob, KEY_B, openTestDb, queuedJobRow, startStack, waitForJob, type Stack } from './helpers.ts';
import { endedJob, usageByScan } from './usage-helpers.ts';

const DAY_MS = 86_400_000;
/** Past days (within the usage API's longest range) only these tests' rows fall on. */
const DAY_1 = (Math.floor(Date.now() / DAY_MS) - 10) * DAY_MS;
const DAY_2 = DAY_1 + DAY_MS;
const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);

async function rollup(handle: DbHandle, clientId: string) {
  const rows = await handle.db.selectFrom('usage_daily').selectAll().where('client_id', '=', clientId).execute();
  return rows.map((r) => ({
    day: Number(r.day),
    capability: r.capability,
    engine: r.engine,
    jobs: Number(r.jobs),
    succeeded: Number(r.succeeded),
    failed: Number(r.failed),
    expired: Number(r.expired),
    cancelled: Number(r.cancelled),
    outputBytes: Number(r.output_bytes),
  }));
}

describe('usage roll-up', () => {
  let stack: Stack;
  let handle: DbHandle;
  let admin: Awaited<ReturnType<typeof consoleSignIn>>;

  before(async () => {
    stack = await startStack();
    handle = await openTestDb(stack.dataDir);
    admin = await consoleSignIn(stack);
  });
  after(async () => {
    await handle?.close();
    await stack?.stop();
  });

  test('every settlement, from every state it may start from, counts the job once in its creation day', async () => {
    const settlements = (Object.keys(TRANSITIONS) as (keyof typeof TRANSITIONS)[]).filter((t): t is Settlement => 'to' in TRANSITIONS[t]);
    assert.deepEqual(settlements.sort(), ['cancel', 'expire', 'expireQueued', 'expireRunning', 'fail', 'succeed']);
    let n = 0;
    for (const transition of settlements) {
      const rule = TRANSITIONS[transition];
      for (const from of rule.from) {
        n++;
        const clientId = `settle-${n}`;
        const id = newId('job');
        const createdUs = (DAY_1 + n * 60_000) * 1000;
        await handle.db
          .insertInto('jobs')
          .values(
            // An engine no worker runs: only this test ends it.
            queuedJobRow({ id, engine: 'nowhere', created_at_us: createdUs, run_at: Date.now(), client_id: clientId }),
          )
          .execute();
        if (from === 'running') await transact(handle, null, (step) => claimJob(step, id, { workerId: 'w1' }));
        const outputs =
          transition === 'succeed'
            ? [
                {
                  id: newId('asset'),
                  client_id: clientId,
                  kind: 'image',
                  name: 'o.png',
                  mime_type: 'image/png',
                  bytes: 4321,
                  sha256: '0'.repeat(64),
                  width: 1,
                  height: 1,
                  duration_seconds: null,
                  source: 'output',
                  source_url: null,
                  job_id: id,
                  storage_key: `k-${id}`,
                  created_at_us: 0,
                },
              ]
            : [];
        // Settled a day later: the job still counts on the day it was created.
        const settle = () => settleJob(handle, null, { jobId: id, transition, leaseOwner: rule.leased ? 'w1' : undefined, error: null, outputs, now: DAY_2 + 1000 });
        const ended = await settle();
        assert.equal(ended?.status, rule.to, `${transition} from ${from}`);
        const expected = { succeeded: 0, failed: 0, expired: 0, cancelled: 0, [rule.to!]: 1 };
        const want = [{ day: usageDay(createdUs), capability: 'image.generate', engine: 'nowhere', jobs: 1, ...expected, outputBytes: transition === 'succeed' ? 4321 : 0 }];
        assert.deepEqual(await rollup(handle, clientId), want, `${transition} from ${from}`);
        // A second try changes nothing (the job is no longer in a state it may start from).
        assert.equal(await settle(), null);
        assert.deepEqual(await rollup(handle, clientId), want, `${transition} from ${from}, twice`);
      }
    }
  });

  test('after a mix of endings the usage API equals a scan of the ended jobs', async () => {
    const on = (ms: number, i: number) => (ms + 3_600_000 + i * 1000) * 1000;
    // Through the settle path directly: succeeded with outputs, failed, on two days and engines.
    await endedJob(handle, { id: newId('job'), clientId: 'mix-a', engine: 'local', createdAtUs: on(DAY_1, 1), status: 'succeeded', outputBytes: [100, 23] });
    await endedJob(handle, { id: newId('job'), clientId: 'mix-a', engine: 'local', createdAtUs: on(DAY_1, 2), status: 'succeeded', outputBytes: [7] });
    await endedJob(handle, { id: newId('job'), clientId: 'mix-a', engine: 'local', createdAtUs: on(DAY_1, 3), status: 'failed' });
    await endedJob(handle, { id: newId('job'), clientId: 'mix-b', engine: 'seedance', createdAtUs: on(DAY_2, 1), status: 'failed', capability: 'video.generate' });
    await endedJob(handle, {
      id: newId('job'),
      clientId: 'mix-b',
      engine: 'jimeng',
      createdAtUs: on(DAY_2, 2),
      status: 'succeeded',
      outputBytes: [5000],
      capability: 'video.generate',
    });

    // Expired by the deadline sweep: one waited too long in the queue, one ran too long.
    const stale = newId('job');
    const overdue = newId('job');
    await handle.db
      .insertInto('jobs')
      .values([
        queuedJobRow({ id: stale, engine: 'nowhere', client_id: 'mix-a', created_at_us: on(DAY_1, 4), run_at: DAY_1 }),
        queuedJobRow({ id: overdue, engine: 'nowhere', client_id: 'mix-b', created_at_us: on(DAY_2, 3), run_at: DAY_2 }),
      ])
      .execute();
    // Taken on day 2 by a worker that has since gone (its lease lapsed long ago).
    await transact(handle, null, (step) => claimJob(step, overdue, { workerId: 'gone', now: DAY_2, leaseMs: 60_000 }));
    await sweepDeadlines(handle, null, { leaseMs: 60_000, maxAttempts: 3, queueTtlMs: DAY_MS, jobTimeoutMs: DAY_MS, now: Date.now() });
    for (const id of [stale, overdue]) {
      assert.equal((await handle.db.selectFrom('jobs').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status, 'expired');
    }

    // Cancelled by the client through the API: one queued, one running (held by a worker).
    const queued = newId('job');
    const running = newId('job');
    await handle.db
      .insertInto('jobs')
      .values([
        queuedJobRow({ id: queued, engine: 'nowhere', client_id: 'client-b', created_at_us: on(DAY_1, 5), run_at: Date.now() }),
        queuedJobRow({ id: running, engine: 'nowhere', client_id: 'client-b', created_at_us: on(DAY_1, 6), run_at: Date.now() }),
      ])
      .execute();
    await transact(handle, null, (step) => claimJob(step, running, { workerId: 'w9' }));
    for (const id of [queued, running]) {
      const res = await stack.api(`/api/v1/jobs/${id}/cancel`, { method: 'POST', key: KEY_B });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.job.status, 'cancelled');
    }
    // A job still queued is not counted yet.
    await handle.db
      .insertInto('jobs')
      .values(queuedJobRow({ id: newId('job'), engine: 'nowhere', client_id: 'mix-a', created_at_us: on(DAY_1, 7), run_at: Date.now() }))
      .execute();

    // And a real job through the API and the worker, succeeded with its real output.
    const created = await stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'rollup', width: 64, height: 64 } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal((await waitForJob(stack, created.body.job.id)).status, 'succeeded');

    const today = Math.floor(Date.now() / DAY_MS);
    const scan = await usageByScan(handle, usageDay(DAY_1 * 1000), today);
    const api = await admin('GET', `/admin/api/usage?from=${day(DAY_1)}&to=${day(today * DAY_MS)}`);
    assert.equal(api.status, 200, api.text);
    assert.deepEqual(api.body.rows, scan);
    // The mix is in there, as counted by hand.
    const a1 = api.body.rows.find((r: { clientId: string; day: string; engine: string }) => r.clientId === 'mix-a' && r.day === day(DAY_1) && r.engine === 'local');
    assert.deepEqual(a1, {
      day: day(DAY_1),
      clientId: 'mix-a',
      capability: 'image.generate',
      engine: 'local',
      jobs: 3,
      succeeded: 2,
      failed: 1,
      expired: 0,
      cancelled: 0,
      outputBytes: 130,
    });
    const a1Swept = api.body.rows.find((r: { clientId: string; day: string; engine: string }) => r.clientId === 'mix-a' && r.day === day(DAY_1) && r.engine === 'nowhere');
    assert.deepEqual(a1Swept, {
      day: day(DAY_1),
      clientId: 'mix-a',
      capability: 'image.generate',
      engine: 'nowhere',
      jobs: 1,
      succeeded: 0,
      failed: 0,
      expired: 1,
      cancelled: 0,
      outputBytes: 0,
    });
    const b1 = api.body.rows.find((r: { clientId: string; day: string }) => r.clientId === 'client-b' && r.day === day(DAY_1));
    assert.deepEqual(b1, {
      day: day(DAY_1),
      clientId: 'client-b',
      capability: 'image.generate',
      engine: 'nowhere',
      jobs: 2,
      succeeded: 0,
      failed: 0,
      expired: 0,
      cancelled: 2,
      outputBytes: 0,
    });
    const realToday = api.body.rows.find((r: { clientId: string; day: string }) => r.clientId === 'client-a' && r.day === day(today * DAY_MS));
    assert.ok(realToday && realToday.succeeded >= 1 && realToday.outputBytes > 0, JSON.stringify(api.body.rows));
  });

  test('the migration back-fills the roll-up from the jobs that had already ended, once', async () => {
    const before = await usageByScan(handle, 0, Math.floor(Date.now() / DAY_MS) + 1);
    assert.ok(before.length > 3);
    // As a database made before the roll-up: the table gone, then the migration's own step.
    await handle.db.schema.dropTable('usage_daily').execute();
    await usageMigration.up(handle.db);
    const after = await usageByScan(handle, 0, Math.floor(Date.now() / DAY_MS) + 1);
    assert.deepEqual(after, before);
    const api = await admin('GET', `/admin/api/usage?from=${day(DAY_1)}&to=${day(DAY_2)}`);
    assert.deepEqual(
      api.body.rows,
      before.filter((r) => r.day === day(DAY_1) || r.day === day(DAY_2)),
    );
    // Migrating again is a no-op (recorded as done).
    await migrateToLatest(handle);
    assert.deepEqual((await admin('GET', `/admin/api/usage?from=${day(DAY_1)}&to=${day(DAY_2)}`)).body.rows, api.body.rows);
  });
});

describe('usage page at size', () => {
  let stack: Stack;
  let handle: DbHandle;
  let admin: Awaited<ReturnType<typeof consoleSignIn>>;

  before(async () => {
    stack = await startStack({ worker: false });
    handle = await openTestDb(stack.dataDir);
    admin = await consoleSignIn(stack);
  });
  after(async () => {
    await handle?.close();
    await stack?.stop();
  });

  test('the page lists the first 500 rows and says so; totals, chart and CSV cover every row', async () => {
    const first = Math.floor(Date.now() / DAY_MS) - 20;
    // 600 roll-up rows over 3 days: 200 engines a day, one job each, 10 bytes of output.
    const rows = [];
    for (let d = 0; d < 3; d++) {
      for (let e = 0; e < 200; e++) {
        rows.push({
          day: first + d,
          client_id: 'wide',
          capability: 'image.generate',
          engine: `e${String(e).padStart(3, '0')}`,
          jobs: 1,
          succeeded: 1,
          failed: 0,
          expired: 0,
          cancelled: 0,
          output_bytes: 10,
        });
      }
    }
    for (let i = 0; i < rows.length; i += 100)
      await handle.db
        .insertInto('usage_daily')
        .values(rows.slice(i, i + 100))
        .execute();
    const range = `from=${day(first * DAY_MS)}&to=${day((first + 2) * DAY_MS)}`;
    const page = await admin('GET', `/admin/usage?${range}&lang=en`);
    assert.equal(page.status, 200);
    assert.match(page.text, /data-test="usage-rows-capped">Showing the first 500 of 600 rows/);
    const table = page.text.slice(page.text.indexOf('data-test="usage-rows"'));
    assert.equal(table.match(/<tr><td class="nowrap">/g)?.length, 500);
    // Totals per client: all 600 jobs; the chart's bars: 200 a day.
    assert.match(page.text, /<td><a href="\/admin\/clients\/wide">wide<\/a><\/td><td class="num">600<\/td><td class="num">600<\/td>/);
    assert.equal(page.text.match(/: 200 jobs, 0 failed<\/title>/g)?.length, 3);
    const csv = await admin('GET', `/admin/usage.csv?${range}`);
    assert.equal(csv.text.trimEnd().split('\r\n').length, 601);
    const api = await admin('GET', `/admin/api/usage?${range}`);
    assert.equal(api.body.rows.length, 600);
    // A range with fewer rows has no note.
    const small = await admin('GET', `/admin/usage?from=${day(first * DAY_MS)}&to=${day(first * DAY_MS)}&lang=en`);
    assert.doesNotMatch(small.text, /usage-rows-capped/);
  });
});
