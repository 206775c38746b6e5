// @backends postgres
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import sharp from 'sharp';
import {
  cleanup,
  createTestSchema,
  KEY_A,
  killAndWait,
  listeningUrl,
  pgAdmin,
  pgUrlWithSchema,
  PG_ADMIN_URL,
  queuedJobRow,
  spawnZhinian,
  startStack,
  tempDir,
  TEST_NAME_PREFIX,
  testEnv,
  waitFor,
  waitForJob,
  type Stack,
} from '../helpers.ts';
import type { Engine } from '../../src/engines/engine.ts';
import { claimNextJob } from '../../src/queue/index.ts';
import { connectDb, type DbHandle } from '../../src/db/connect.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';

/**
 * What PostgreSQL must do that SQLite's single writer gave for free: claims that never
 * collide, wake-ups across processes, unique sort keys under concurrent writers, and
 * surviving a lost connection. Always runs on PostgreSQL (127.0.0.1:5432, database `test`).
 */

const PNG = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#2040c0' } })
  .png()
  .toBuffer();
/** A new schema for one test; the file's schemas are dropped at its end unless a test failed. */
const freshSchema = (owner?: string) => createTestSchema({ owner });

interface Run {
  jobId: string;
  startedAt: number;
  abortedAt: number | null;
}

/** An in-process engine that records when each run starts (and aborts); `hold` keeps runs going until aborted. */
function recordingEngine(opts: { hold?: boolean } = {}) {
  const runs: Run[] = [];
  const engine: Engine = {
    name: 'test',
    capabilities: ['image.generate'],
    async run(req, ctx) {
      const run: Run = { jobId: req.jobId, startedAt: Date.now(), abortedAt: null };
      runs.push(run);
      if (opts.hold) {
        await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
        run.abortedAt = Date.now();
        throw ctx.signal.reason ?? new Error('aborted');
      }
      const file = path.join(ctx.workDir, 'out.png');
      await fsp.writeFile(file, PNG);
      return [{ path: file, kind: 'image', mimeType: 'image/png' }];
    },
  };
  return { engine, runs };
}

/**
 * A role of the test's own with a schema it owns, and the URL that connects as it: refusing
 * its logins (and terminating its backends) takes this test's database away without touching
 * any other test's connections. The schema goes with the role at the end.
 */
function ownRole(t: TestContext, name: string, login: boolean): { role: string; url: string } {
  const role = `${TEST_NAME_PREFIX}_${name}`;
  pgAdmin(`drop role if exists ${role}; create role ${role} ${login ? 'login' : 'nologin'}`);
  t.after(() => {
    pgAdmin(`alter role ${role} login; drop owned by ${role} cascade; drop role ${role}`);
  });
  const base = new URL(PG_ADMIN_URL);
  base.username = role;
  return { role, url: pgUrlWithSchema(freshSchema(role), base.toString()) };
}

async function createJob(stack: Stack): Promise<any> {
  const res = await stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'a blue heron', width: 64, height: 64 } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.job;
}

describe('PostgreSQL backend', () => {
  test('concurrent claimers on two connections pools take each of 200 jobs exactly once (SKIP LOCKED)', async (t) => {
    const add = cleanup(t);
    const url = pgUrlWithSchema(freshSchema());
    const a: DbHandle = add(await connectDb({ databaseUrl: url, dataDir: tempDir() }), (h) => h.close());
    const b: DbHandle = add(await connectDb({ databaseUrl: url, dataDir: tempDir() }), (h) => h.close());
    await Promise.all([migrateToLatest(a), migrateToLatest(b)]);
    const now = Date.now();
    await a.db
      .insertInto('jobs')
      .values(
        Array.from({ length: 200 }, (_, i) =>
          queuedJobRow({ id: `job_race_${String(i).padStart(3, '0')}`, engine: 'test', created_at_us: now * 1000 + i, run_at: now - 1000 + i, updated_at: now }),
        ),
      )
      .execute();

    const claimed: { id: string; by: string }[] = [];
    const claimer = async (handle: DbHandle, by: string) => {
      for (;;) {
        const job = await claimNextJob(handle, { workerId: by, now: Date.now(), leaseMs: 60_000, engines: [{ engine: 'test' }] });
        if (!job) return;
        assert.equal(job.leaseOwner, by);
        claimed.push({ id: job.id, by });
      }
    };
    // Four claimers per handle: eight statements racing for the same head of the queue.
    await Promise.all([0, 1, 2, 3].flatMap((i) => [claimer(a, `wrk_a${i}`), claimer(b, `wrk_b${i}`)]));

    assert.equal(claimed.length, 200);
    assert.equal(new Set(claimed.map((c) => c.id)).size, 200, 'no job was claimed twice');
    const rows = await a.db.selectFrom('jobs').select(['status', 'attempts']).execute();
    assert.ok(rows.every((r) => r.status === 'running' && r.attempts === 1));
    assert.ok(new Set(claimed.filter((c) => c.by.startsWith('wrk_b')).map((c) => c.id)).size > 0, 'the second pool claimed some');
  });

  test('a job created by another process wakes an idle worker within 200 ms despite a 60 s poll; a cancel aborts its run as fast', async (t) => {
    const add = cleanup(t);
    const dataDir = tempDir();
    const env = { DATABASE_URL: pgUrlWithSchema(freshSchema()), ZHINIAN_POLL_INTERVAL_MS: '60000' };
    const api = add(await startStack({ dataDir, worker: false, env, engines: [recordingEngine().engine] }), (s) => s.stop());
    const quick = recordingEngine();
    const worker = add(await startStack({ dataDir, server: false, env, engines: [quick.engine] }), (s) => s.stop());
    // Let the worker's first (empty) look at the queue pass: from now on only a wake-up or the 60 s poll finds work.
    await new Promise((r) => setTimeout(r, 300));

    for (let i = 0; i < 3; i++) {
      const job = await createJob(api);
      const createdAt = Date.now();
      const run = await waitFor(() => quick.runs.find((r) => r.jobId === job.id), { timeoutMs: 5_000, what: 'the worker to start the job' });
      console.log(`# pickup ${i}: ${run.startedAt - createdAt} ms`);
      assert.ok(run.startedAt - createdAt < 200, `picked up after ${run.startedAt - createdAt} ms`);
      assert.equal((await waitForJob(api, job.id)).status, 'succeeded');
    }
    await worker.stop();

    // Cancels: the lease check only looks every 500 ms, so an abort within 200 ms came by NOTIFY.
    const held = recordingEngine({ hold: true });
    add(await startStack({ dataDir, server: false, env, engines: [held.engine] }), (s) => s.stop());
    const job = await createJob(api);
    const run = await waitFor(() => held.runs.find((r) => r.jobId === job.id), { timeoutMs: 5_000, what: 'the held run to start' });
    const cancelledAt = Date.now();
    const res = await api.api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    await waitFor(() => run.abortedAt, { timeoutMs: 5_000, what: 'the run to abort' });
    assert.ok(run.abortedAt! - cancelledAt < 200, `aborted after ${run.abortedAt! - cancelledAt} ms`);
  });

  test('two API instances creating 500 jobs for one client give each a unique sort key: paging returns each exactly once', async (t) => {
    const add = cleanup(t);
    const dataDir = tempDir();
    const env = { DATABASE_URL: pgUrlWithSchema(freshSchema()) };
    const engines = [recordingEngine().engine];
    const first = add(await startStack({ dataDir, worker: false, env, engines }), (s) => s.stop());
    const second = add(await startStack({ dataDir, worker: false, env, engines }), (s) => s.stop());

    const created: string[] = [];
    const lane = async (stack: Stack, count: number) => {
      for (let i = 0; i < count; i++) created.push((await createJob(stack)).id);
    };
    // 20 requests in flight per instance: their group commits race for the same newest key.
    await Promise.all(Array.from({ length: 40 }, (_, i) => lane(i % 2 === 0 ? first : second, Math.floor(500 / 40) + (i < 500 % 40 ? 1 : 0))));
    assert.equal(created.length, 500);

    const seen: string[] = [];
    let before: string | null = null;
    do {
      const res = await first.api(`/api/v1/jobs?limit=37${before ? `&before=${encodeURIComponent(before)}` : ''}`, { key: KEY_A });
      assert.equal(res.status, 200);
      seen.push(...res.body.jobs.map((j: any) => j.id));
      before = res.body.nextBefore;
    } while (before);
    assert.equal(seen.length, 500, 'no job repeated or skipped');
    assert.deepEqual([...seen].sort(), [...created].sort());
  });

  test('a lost database connection is survived: /readyz answers 503 while it is gone and 200 after, and the worker goes on', async (t) => {
    const add = cleanup(t);
    const { role, url } = ownRole(t, 'loss', true);
    const env = { DATABASE_URL: url, ZHINIAN_POLL_INTERVAL_MS: '200' };
    const engine = recordingEngine();
    const stack = add(await startStack({ dataDir: tempDir(), env, engines: [engine.engine] }), (s) => s.stop());

    assert.equal((await waitForJob(stack, (await createJob(stack)).id)).status, 'succeeded');
    assert.equal((await stack.api('/readyz')).status, 200);

    pgAdmin(`alter role ${role} nologin; select pg_terminate_backend(pid) from pg_stat_activity where usename = '${role}'`);
    const down = await waitFor(
      async () => {
        const res = await stack.api('/readyz');
        return res.status === 503 ? res.body : null;
      },
      { timeoutMs: 15_000, what: '/readyz to report the database down' },
    );
    assert.equal(down.database, 'unavailable');
    // Give the worker's loops time to hit the outage a few times.
    await new Promise((r) => setTimeout(r, 1_000));

    pgAdmin(`alter role ${role} login`);
    await waitFor(async () => (await stack.api('/readyz')).status === 200, { timeoutMs: 15_000, what: '/readyz to recover' });
    const after = await createJob(stack);
    assert.equal((await waitForJob(stack, after.id, undefined, 20_000)).status, 'succeeded');
    assert.equal(engine.runs.filter((r) => r.jobId === after.id).length, 1);
  });

  test('a process started while the database refuses it waits with backoff instead of exiting, then serves', async (t) => {
    const add = cleanup(t);
    const { role, url: databaseUrl } = ownRole(t, 'late', false);
    const server = add(spawnZhinian('server', testEnv(tempDir(), { DATABASE_URL: databaseUrl, PORT: '0', LOG_LEVEL: 'warn' })), (c) => killAndWait(c));
    await waitFor(() => (server.output().match(/waiting for the database/g)?.length ?? 0) >= 3, { timeoutMs: 15_000, what: 'retries to be logged' });
    assert.equal(server.exitCode, null, 'still running while the database refuses it');

    pgAdmin(`alter role ${role} login`);
    const url = await listeningUrl(server);
    const ready = await fetch(`${url}/readyz`);
    assert.equal(ready.status, 200);
    assert.equal((await ready.json()).database, 'ok');
  });
});
