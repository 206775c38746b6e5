// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import sharp from 'sharp';
import type { DbHandle, JobsTable } from '../src/db/index.ts';
import { EngineError, type Engine, type EngineRequest, type RunContext } from '../src/engines/engine.ts';
import { claimNextJob } from '../src/queue/index.ts';
import { cleanup, ffmpegProcessesWith, killAndWait, spawnZhinian, type Stack, startReceiver, startStack, tempDir, testEnv, waitFor, waitForJob, openTestDb } from './helpers.ts';

/**
 * The durable queue: atomic claims, leases and heartbeats, bounded attempts, deadlines,
 * cancel reaching the engine, graceful shutdown and prompt pickup.
 */

const PNG = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#c04020' } })
  .png()
  .toBuffer();
const TERMINAL = ['succeeded', 'failed', 'expired', 'cancelled'];

interface EngineRun {
  jobId: string;
  /** 1 for the first run of this job on this engine, 2 for the second… */
  n: number;
  signal: AbortSignal;
  startedAt: number;
  abortedAt: number | null;
  finishedAt: number | null;
}

type Behaviour = (req: EngineRequest, ctx: RunContext, run: EngineRun) => Promise<void>;

/** An in-test engine that records every run; `behave` decides what a run does before writing its PNG. */
function testEngine(behave?: Behaviour, runs: EngineRun[] = []) {
  const engine: Engine = {
    name: 'test',
    capabilities: ['image.generate'],
    async run(req, ctx) {
      const run: EngineRun = {
        jobId: req.jobId,
        n: runs.filter((r) => r.jobId === req.jobId).length + 1,
        signal: ctx.signal,
        startedAt: Date.now(),
        abortedAt: null,
        finishedAt: null,
      };
      if (ctx.signal.aborted) run.abortedAt = run.startedAt;
      ctx.signal.addEventListener('abort', () => (run.abortedAt = Date.now()), { once: true });
      runs.push(run);
      try {
        await behave?.(req, ctx, run);
        const file = path.join(ctx.workDir, 'out.png');
        await fsp.writeFile(file, PNG);
        return [{ path: file, kind: 'image', mimeType: 'image/png' }];
      } finally {
        run.finishedAt = Date.now();
      }
    },
  };
  return { engine, runs, runsOf: (jobId: string) => runs.filter((r) => r.jobId === jobId) };
}

const untilAborted = (signal: AbortSignal) => new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function openDb(dataDir: string): Promise<DbHandle> {
  return openTestDb(dataDir);
}

async function jobRow(h: DbHandle, id: string): Promise<JobsTable> {
  return h.db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
}

async function createJob(stack: Stack, extra: Record<string, unknown> = {}): Promise<any> {
  const res = await stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'a red fox', width: 64, height: 64, ...extra } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.job;
}

async function outputAssetsOf(stack: Stack, jobId: string): Promise<any[]> {
  const all: any[] = [];
  let before: string | null = null;
  do {
    const res = await stack.api(`/api/v1/assets?limit=200${before ? `&before=${encodeURIComponent(before)}` : ''}`);
    assert.equal(res.status, 200);
    all.push(...res.body.assets);
    before = res.body.nextBefore;
  } while (before);
  return all.filter((a) => a.jobId === jobId);
}

/** A server without a worker, plus a worker without a server, on one data dir (two SQLite connections). */
async function split(t: TestContext, opts: { env?: Record<string, string>; engine?: Engine; dataDir?: string } = {}) {
  const add = cleanup(t);
  const dataDir = opts.dataDir ?? tempDir();
  const api = add(await startStack({ dataDir, worker: false, env: opts.env, engines: [testEngine().engine] }), (s) => s.stop());
  const h = add(await openDb(dataDir), (x) => x.close());
  const startWorker = async (engine: Engine, env: Record<string, string> = {}) =>
    add(await startStack({ dataDir, server: false, env: { ...opts.env, ...env }, engines: [engine] }), (s) => s.stop());
  return { api, h, dataDir, add, startWorker };
}

/** Waits until `count` jobs are terminal; `check` may throw to report a dead helper process. */
async function allTerminal(h: DbHandle, count: number, check: () => void = () => {}): Promise<void> {
  await waitFor(
    async () => {
      check();
      const { n } = await h.db
        .selectFrom('jobs')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('status', 'in', TERMINAL)
        .executeTakeFirstOrThrow();
      return Number(n) === count;
    },
    { timeoutMs: 60_000, what: `${count} jobs to finish`, intervalMs: 100 },
  );
}

const workDirsOf = (dataDir: string) => {
  try {
    return fs.readdirSync(path.join(dataDir, 'tmp', 'work'));
  } catch {
    return [];
  }
};

describe('claiming', () => {
  test('two workers racing over 200 jobs run each job exactly once', async (t) => {
    const { api, h, startWorker } = await split(t);
    const runsByJob = new Map<string, number>();
    const runsByWorker = [0, 0];
    const counting = (worker: number) =>
      testEngine(async (req) => {
        runsByJob.set(req.jobId, (runsByJob.get(req.jobId) ?? 0) + 1);
        runsByWorker[worker]++;
        await delay(Math.random() * 10);
      }).engine;

    const ids: string[] = [];
    for (let batch = 0; batch < 10; batch++) {
      const jobs = await Promise.all(Array.from({ length: 20 }, (_, i) => createJob(api, { prompt: `job ${batch}-${i}` })));
      ids.push(...jobs.map((j) => j.id));
    }
    assert.equal(new Set(ids).size, 200);

    // Both start against a full queue, so every claim is contended.
    await Promise.all([startWorker(counting(0), { ZHINIAN_WORKER_CONCURRENCY: '4' }), startWorker(counting(1), { ZHINIAN_WORKER_CONCURRENCY: '4' })]);
    await allTerminal(h, 200);

    const rows = await h.db.selectFrom('jobs').selectAll().where('id', 'in', ids).execute();
    const notSucceeded = rows.filter((r) => r.status !== 'succeeded');
    assert.deepEqual(
      notSucceeded.map((r) => `${r.id}: ${r.status} ${r.error_code}`),
      [],
    );
    const twice = [...runsByJob].filter(([, n]) => n !== 1);
    assert.deepEqual(twice, [], 'jobs run more than once');
    assert.equal(runsByJob.size, 200, 'every job ran');
    assert.ok(
      rows.every((r) => r.attempts === 1),
      `attempts: ${[...new Set(rows.map((r) => r.attempts))]}`,
    );
    assert.ok(rows.every((r) => JSON.parse(r.output_asset_ids).length === 1));
    const assets = await h.db.selectFrom('assets').select(['job_id']).where('source', '=', 'output').execute();
    assert.equal(assets.length, 200, 'one output asset per job');
    t.diagnostic(`runs per worker: ${runsByWorker.join(' / ')}`);
    assert.ok(runsByWorker[0] > 0 && runsByWorker[1] > 0, `both workers ran jobs: ${runsByWorker.join(' / ')}`);
  });

  test('two worker processes racing over 200 jobs run each job exactly once', async (t) => {
    const { api, h, dataDir, add } = await split(t);
    // Each child boots a worker whose engine appends "<worker> <jobId>" to one file (O_APPEND
    // keeps short lines whole), so runs can be counted across processes.
    const runLog = path.join(dataDir, 'runs.log');
    const script = path.join(dataDir, 'counting-worker.mts');
    fs.writeFileSync(
      script,
      `import fs from 'node:fs';
import path from 'node:path';
import { boot } from ${JSON.stringify(path.resolve(import.meta.dirname, '../src/cli/boot.ts'))};
const png = Buffer.from(${JSON.stringify(PNG.toString('base64'))}, 'base64');
const tag = process.argv[2];
const engine = {
  name: 'test',
  capabilities: ['image.generate'],
  async run(req, ctx) {
    fs.appendFileSync(${JSON.stringify(runLog)}, tag + ' ' + req.jobId + '\\n');
    await new Promise((r) => setTimeout(r, Math.random() * 10));
    const file = path.join(ctx.workDir, 'out.png');
    fs.writeFileSync(file, png);
    return [{ path: file, kind: 'image', mimeType: 'image/png' }];
  },
};
await boot({ env: process.env, server: false, worker: true, engines: [engine] });
console.log('ready');
`,
    );
    const ids: string[] = [];
    for (let batch = 0; batch < 10; batch++) {
      const jobs = await Promise.all(Array.from({ length: 20 }, (_, i) => createJob(api, { prompt: `job ${batch}-${i}` })));
      ids.push(...jobs.map((j) => j.id));
    }
    const env = { ...process.env, ...testEnv(dataDir, { ZHINIAN_WORKER_CONCURRENCY: '4' }) };
    const children = ['A', 'B'].map((tag) => {
      const child = spawn(process.execPath, ['--import', 'tsx', script, tag], { cwd: path.resolve(import.meta.dirname, '..'), env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      add(child, (c) => killAndWait(c));
      return { child, output: () => out };
    });
    const outputs = () => children.map((c) => c.output()).join(' | ');
    await allTerminal(h, 200, () => {
      if (children.some((c) => c.child.exitCode !== null)) throw new Error(`a worker exited: ${outputs()}`);
    });
    const lines = fs.readFileSync(runLog, 'utf8').trim().split('\n');
    const runsByJob = new Map<string, number>();
    const runsByWorker: Record<string, number> = { A: 0, B: 0 };
    for (const line of lines) {
      const [tag, jobId] = line.split(' ');
      runsByJob.set(jobId, (runsByJob.get(jobId) ?? 0) + 1);
      runsByWorker[tag]++;
    }
    const rows = await h.db.selectFrom('jobs').select(['id', 'status', 'attempts']).where('id', 'in', ids).execute();
    assert.deepEqual(
      rows.filter((r) => r.status !== 'succeeded'),
      [],
    );
    assert.deepEqual(
      [...runsByJob].filter(([, n]) => n !== 1),
      [],
      'jobs run more than once',
    );
    assert.equal(runsByJob.size, 200);
    assert.ok(rows.every((r) => r.attempts === 1));
    t.diagnostic(`runs per worker process: ${runsByWorker.A} / ${runsByWorker.B}`);
    assert.ok(runsByWorker.A > 0 && runsByWorker.B > 0, `both workers ran jobs: ${JSON.stringify(runsByWorker)}`);
  });

  test('a worker that heartbeats keeps a job running longer than its lease', async (t) => {
    const env = { ZHINIAN_JOB_LEASE_SECONDS: '2' };
    const { api, h, startWorker } = await split(t, { env });
    const runs: EngineRun[] = [];
    const slow = () => testEngine(() => delay(5_000), runs).engine;
    await startWorker(slow());
    await startWorker(slow());
    const job = await createJob(api);
    await waitFor(() => runs.length > 0, { what: 'engine run' });
    const firstLease = Number((await jobRow(h, job.id)).run_at);
    let latestLease = firstLease;
    const done = await waitFor(
      async () => {
        const row = await jobRow(h, job.id);
        if (row.run_at !== null) latestLease = Math.max(latestLease, Number(row.run_at));
        return TERMINAL.includes(row.status) ? row : null;
      },
      { timeoutMs: 20_000, intervalMs: 100, what: 'the slow job to finish' },
    );
    assert.equal(done.status, 'succeeded');
    assert.equal(runs.length, 1, 'the job ran once although it outlived two leases');
    assert.equal(done.attempts, 1);
    assert.ok(latestLease > firstLease + 1_000, 'the heartbeat moved the lease forward');
  });
});

describe('leases', () => {
  test('a job whose worker died runs again on another worker after ZHINIAN_JOB_LEASE_SECONDS', async (t) => {
    const env = { ZHINIAN_JOB_LEASE_SECONDS: '1' };
    const { api, h, startWorker } = await split(t, { env });
    const job = await createJob(api);
    // A worker that claims the job and then never heartbeats (it "died").
    const claimedAt = Date.now();
    const claimed = await claimNextJob(h, { workerId: 'wrk_dead', now: claimedAt, leaseMs: 1_000, engines: [{ engine: 'test' }] });
    assert.equal(claimed?.id, job.id);
    assert.equal(claimed?.attempts, 1);

    const engine = testEngine();
    await startWorker(engine.engine);
    const done = await waitForJob(api, job.id, TERMINAL, 20_000);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.outputAssetIds.length, 1);
    assert.equal(engine.runs.length, 1);
    assert.ok(engine.runs[0].startedAt >= claimedAt + 1_000 - 50, 'not taken over before the lease lapsed');
    assert.equal((await jobRow(h, job.id)).attempts, 2);
  });

  test('a job whose lease lapses three times fails with worker_lost and a generation.failed webhook', async (t) => {
    const env = { ZHINIAN_JOB_LEASE_SECONDS: '1' };
    const { api, h, startWorker, add } = await split(t, { env });
    const receiver = add(await startReceiver(), (r) => r.close());
    const job = await createJob(api, { webhookUrl: receiver.url });
    for (let attempt = 1; attempt <= 3; attempt++) {
      const claimed = await claimNextJob(h, { workerId: `wrk_dead${attempt}`, now: Date.now(), leaseMs: 1_000, engines: [{ engine: 'test' }] });
      assert.equal(claimed?.id, job.id);
      assert.equal(claimed?.attempts, attempt);
      // The dead worker's lease lapses (backdated instead of waited for).
      await h.db
        .updateTable('jobs')
        .set({ run_at: Date.now() - 1 })
        .where('id', '=', job.id)
        .execute();
    }
    const engine = testEngine();
    await startWorker(engine.engine);
    const done = await waitForJob(api, job.id, TERMINAL, 20_000);
    assert.equal(done.status, 'failed');
    assert.equal(done.error.code, 'worker_lost');
    assert.ok(done.error.message.length > 0);
    assert.equal(engine.runs.length, 0, 'no fourth attempt ran');
    const hook = await waitFor(() => receiver.hooks.find((x) => x.body.job.id === job.id), { what: 'failure webhook' });
    assert.equal(hook.body.event, 'generation.failed');
    assert.equal(hook.headers['x-zhinian-event'], 'generation.failed');
    assert.equal(hook.body.job.status, 'failed');
    assert.equal(hook.body.job.error.code, 'worker_lost');
  });
});

describe('deadlines', () => {
  test('a queued job older than ZHINIAN_QUEUE_TTL_SECONDS expires with a generation.expired webhook', async (t) => {
    const env = { ZHINIAN_QUEUE_TTL_SECONDS: '60' };
    const { api, h, startWorker, add } = await split(t, { env });
    const receiver = add(await startReceiver(), (r) => r.close());
    const job = await createJob(api, { webhookUrl: receiver.url });
    const hourUs = 3_600_000_000;
    await h.db
      .updateTable('jobs')
      .set((eb) => ({ created_at_us: eb('created_at_us', '-', hourUs), run_at: eb('run_at', '-', hourUs / 1000) }))
      .where('id', '=', job.id)
      .execute();
    const engine = testEngine();
    await startWorker(engine.engine);
    const done = await waitForJob(api, job.id, TERMINAL, 20_000);
    assert.equal(done.status, 'expired');
    assert.ok(done.error?.code, 'error says which deadline');
    assert.equal(engine.runs.length, 0);
    const hook = await waitFor(() => receiver.hooks.find((x) => x.body.job.id === job.id), { what: 'expiry webhook' });
    assert.equal(hook.body.event, 'generation.expired');
    assert.equal(hook.headers['x-zhinian-event'], 'generation.expired');
  });

  test('a queued job expires by its TTL even while every worker slot is busy', async (t) => {
    const env = { ZHINIAN_QUEUE_TTL_SECONDS: '60', ZHINIAN_WORKER_CONCURRENCY: '1' };
    const { api, h, startWorker } = await split(t, { env });
    const engine = testEngine((_req, ctx) => untilAborted(ctx.signal));
    await startWorker(engine.engine);
    const blocker = await createJob(api);
    await waitFor(() => engine.runs.length === 1, { what: 'blocker to run' });
    const stale = await createJob(api);
    await h.db
      .updateTable('jobs')
      .set((eb) => ({ created_at_us: eb('created_at_us', '-', 3_600_000_000), run_at: eb('run_at', '-', 3_600_000) }))
      .where('id', '=', stale.id)
      .execute();
    const done = await waitForJob(api, stale.id, TERMINAL, 10_000);
    assert.equal(done.status, 'expired');
    assert.equal((await api.api(`/api/v1/jobs/${blocker.id}/cancel`, { method: 'POST' })).status, 200);
  });

  test('a job handed back on shutdown is not expired by the queue TTL it met when it first started', async (t) => {
    const env = { ZHINIAN_QUEUE_TTL_SECONDS: '60' };
    const { api, h, dataDir } = await split(t, { env });
    const blocking = testEngine((_req, ctx) => untilAborted(ctx.signal));
    const first = await startStack({ dataDir, server: false, env, engines: [blocking.engine] });
    const job = await createJob(api);
    await waitFor(() => blocking.runs.length === 1, { what: 'first run' });
    // The job was created and started two minutes ago (within its TTL) and is still running.
    await h.db
      .updateTable('jobs')
      .set((eb) => ({ created_at_us: eb('created_at_us', '-', 120_000_000), started_at: eb('started_at', '-', 120_000) }))
      .where('id', '=', job.id)
      .execute();
    await first.stop(); // graceful: hands the job back
    const handedBack = await jobRow(h, job.id);
    assert.equal(handedBack.lease_owner, null);

    const second = testEngine();
    cleanup(t)(await startStack({ dataDir, server: false, env, engines: [second.engine] }), (s) => s.stop());
    const done = await waitForJob(api, job.id, TERMINAL, 10_000);
    assert.equal(done.status, 'succeeded', `${done.status}: ${JSON.stringify(done.error)}`);
    assert.equal(second.runs.length, 1);
  });

  test('a job running past ZHINIAN_JOB_TIMEOUT_SECONDS expires and its engine run is aborted', async (t) => {
    const add = cleanup(t);
    const receiver = add(await startReceiver(), (r) => r.close());
    // The engine ignores the abort's meaning and tries to deliver an output anyway.
    const engine = testEngine((_req, ctx) => untilAborted(ctx.signal));
    const stack = add(await startStack({ env: { ZHINIAN_JOB_TIMEOUT_SECONDS: '3600' }, engines: [engine.engine] }), (s) => s.stop());
    const h = add(await openDb(stack.dataDir), (x) => x.close());
    const job = await createJob(stack, { webhookUrl: receiver.url });
    await waitFor(() => engine.runs.length === 1, { what: 'engine run' });
    await h.db
      .updateTable('jobs')
      .set({ started_at: Date.now() - 2 * 3_600_000 })
      .where('id', '=', job.id)
      .execute();
    const backdatedAt = Date.now();

    const done = await waitForJob(stack, job.id, TERMINAL, 10_000);
    assert.equal(done.status, 'expired');
    assert.ok(done.error?.code);
    await waitFor(() => engine.runs[0].abortedAt, { timeoutMs: 5_000, what: 'engine to see the abort' });
    t.diagnostic(`abort reached the engine ${engine.runs[0].abortedAt! - backdatedAt} ms after the deadline was passed`);
    assert.ok(engine.runs[0].abortedAt! - backdatedAt < 5_000, 'the owning worker notices the expiry at its next lease check');

    await waitFor(() => engine.runs[0].finishedAt && workDirsOf(stack.dataDir).length === 0, { what: 'the run to wind down' });
    const after = (await stack.api(`/api/v1/jobs/${job.id}`)).body.job;
    assert.equal(after.status, 'expired', 'terminal is final');
    assert.deepEqual(after.outputAssetIds, []);
    assert.deepEqual(await outputAssetsOf(stack, job.id), []);
    const hook = await waitFor(() => receiver.hooks.find((x) => x.body.job.id === job.id), { what: 'expiry webhook' });
    assert.equal(hook.body.event, 'generation.expired');
    const deliveries = await h.db.selectFrom('webhook_deliveries').select('event').where('job_id', '=', job.id).execute();
    assert.deepEqual(deliveries, [{ event: 'generation.expired' }]);
  });
});

describe('cancel', () => {
  async function cancelRunning(t: TestContext, layout: 'embedded' | 'split') {
    const add = cleanup(t);
    const receiver = add(await startReceiver(), (r) => r.close());
    // After the abort the engine still returns an output: it must not turn the job around.
    const engine = testEngine((_req, ctx) => untilAborted(ctx.signal));
    let api: Stack;
    let h: DbHandle;
    if (layout === 'embedded') {
      api = add(await startStack({ engines: [engine.engine] }), (s) => s.stop());
      h = add(await openDb(api.dataDir), (x) => x.close());
    } else {
      const s = await split(t);
      await s.startWorker(engine.engine);
      api = s.api;
      h = s.h;
    }
    const job = await createJob(api, { webhookUrl: receiver.url });
    await waitFor(() => engine.runs.length === 1, { what: 'engine run' });

    const cancelledAt = Date.now();
    const res = await api.api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.job.status, 'cancelled');
    await waitFor(() => engine.runs[0].abortedAt, { timeoutMs: 2_000, intervalMs: 10, what: "the engine's signal to abort within 2 s" });
    t.diagnostic(`${layout}: abort reached the engine after ${engine.runs[0].abortedAt! - cancelledAt} ms`);

    await waitFor(() => engine.runs[0].finishedAt && workDirsOf(api.dataDir).length === 0, { what: 'the run to wind down' });
    const after = (await api.api(`/api/v1/jobs/${job.id}`)).body.job;
    assert.equal(after.status, 'cancelled', 'a cancelled job never leaves cancelled');
    assert.deepEqual(after.outputAssetIds, []);
    assert.deepEqual(await outputAssetsOf(api, job.id), []);
    assert.equal((await h.db.selectFrom('assets').select('id').where('job_id', '=', job.id).execute()).length, 0);

    const hook = await waitFor(() => receiver.hooks.find((x) => x.body.job.id === job.id), { what: 'cancel webhook' });
    assert.equal(hook.body.event, 'generation.cancelled');
    assert.equal(hook.body.job.status, 'cancelled');
    // The sender records the answer after the receiver has it: wait for the record, not just the request.
    const deliveries = await waitFor(
      async () => {
        const rows = await h.db.selectFrom('webhook_deliveries').select(['event', 'status']).where('job_id', '=', job.id).execute();
        return rows.every((r) => r.status !== 'pending') ? rows : null;
      },
      { what: 'the delivery recorded' },
    );
    assert.deepEqual(deliveries, [{ event: 'generation.cancelled', status: 'delivered' }]);
    assert.equal(receiver.hooks.filter((x) => x.body.job.id === job.id).length, 1);

    const again = await api.api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    assert.equal(again.status, 409);
  }

  test('cancel of a running job aborts the engine within 2 s and the job stays cancelled (embedded worker)', (t) => cancelRunning(t, 'embedded'));
  test('cancel through the API reaches a worker in another process within 2 s', (t) => cancelRunning(t, 'split'));

  test('cancel racing the end of a run leaves one terminal state, one webhook, and outputs only when succeeded', async (t) => {
    const add = cleanup(t);
    const receiver = add(await startReceiver(), (r) => r.close());
    const engine = testEngine(() => delay(Math.random() * 30));
    const stack = add(await startStack({ engines: [engine.engine], env: { ZHINIAN_WORKER_CONCURRENCY: '4' } }), (s) => s.stop());
    const h = add(await openDb(stack.dataDir), (x) => x.close());
    const jobs = await Promise.all(Array.from({ length: 40 }, () => createJob(stack, { webhookUrl: receiver.url })));
    const answers = await Promise.all(
      jobs.map(async (job) => {
        await delay(Math.random() * 300);
        return (await stack.api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' })).status;
      }),
    );
    await waitFor(
      async () => {
        const rows = await h.db.selectFrom('webhook_deliveries').select('status').execute();
        return rows.length === 40 && rows.every((r) => r.status === 'delivered') && workDirsOf(stack.dataDir).length === 0;
      },
      { timeoutMs: 20_000, what: 'every job to settle and announce itself' },
    );
    const tally: Record<string, number> = {};
    for (const [i, job] of jobs.entries()) {
      const row = await jobRow(h, job.id);
      tally[row.status] = (tally[row.status] ?? 0) + 1;
      const outputs = await h.db.selectFrom('assets').select('id').where('job_id', '=', job.id).execute();
      const deliveries = await h.db.selectFrom('webhook_deliveries').select('event').where('job_id', '=', job.id).execute();
      assert.deepEqual(deliveries, [{ event: `generation.${row.status}` }], job.id);
      if (answers[i] === 200) {
        assert.equal(row.status, 'cancelled', `${job.id}: cancel answered 200 but the job is ${row.status}`);
        assert.equal(outputs.length, 0, `${job.id}: a cancelled job has no outputs`);
        assert.equal(row.output_asset_ids, '[]');
      } else {
        assert.equal(answers[i], 409);
        assert.equal(row.status, 'succeeded');
        assert.equal(outputs.length, 1);
      }
    }
    t.diagnostic(`final states: ${JSON.stringify(tally)}`);
    const hooks = receiver.hooks.map((x) => x.body.job.id);
    assert.equal(hooks.length, 40);
    assert.equal(new Set(hooks).size, 40);
  });

  test('cancel of a long video on the local engine kills ffmpeg and clears its work dir within 2 s', async (t) => {
    const add = cleanup(t);
    const stack = add(await startStack(), (s) => s.stop());
    const job = await createJob(stack, {
      capability: 'video.generate',
      prompt: '一条很长的品牌视频',
      settings: { ratio: '16:9', duration: 15, resolution: '1080p' },
      width: undefined,
      height: undefined,
    });
    // Progress past 10 means ffmpeg is encoding.
    await waitFor(
      async () => {
        const { body } = await stack.api(`/api/v1/jobs/${job.id}`);
        return body.job.status === 'running' && body.job.progress > 10;
      },
      { timeoutMs: 30_000, what: 'ffmpeg to be encoding' },
    );
    const [dir] = workDirsOf(stack.dataDir);
    assert.ok(dir, 'the run has a work dir');
    const workDir = path.join(stack.dataDir, 'tmp', 'work', dir);
    assert.ok(ffmpegProcessesWith(workDir).length > 0, 'ffmpeg runs in the work dir');

    const cancelledAt = Date.now();
    const res = await stack.api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    assert.equal(res.status, 200);
    assert.equal(res.body.job.status, 'cancelled');
    await waitFor(() => !fs.existsSync(workDir) && ffmpegProcessesWith(workDir).length === 0, {
      timeoutMs: 2_000,
      intervalMs: 20,
      what: 'ffmpeg to be killed and the work dir removed within 2 s',
    });
    t.diagnostic(`work dir gone ${Date.now() - cancelledAt} ms after cancel`);
    const after = (await stack.api(`/api/v1/jobs/${job.id}`)).body.job;
    assert.equal(after.status, 'cancelled');
    assert.deepEqual(after.outputAssetIds, []);
  });
  test('cancel of an 8k upscale on the local engine stops its work within 2 s', async (t) => {
    const add = cleanup(t);
    const stack = add(await startStack(), (s) => s.stop());
    // Noise compresses badly, so writing the 8k PNG takes a while.
    const noise = await sharp(crypto.randomBytes(1200 * 900 * 3), { raw: { width: 1200, height: 900, channels: 3 } })
      .png({ compressionLevel: 1 })
      .toBuffer();
    const form = new FormData();
    form.append('files', new Blob([noise], { type: 'image/png' }), 'noise.png');
    const uploaded = await stack.api('/api/v1/assets', { method: 'POST', body: form });
    assert.equal(uploaded.status, 201, JSON.stringify(uploaded.body));
    const job = await createJob(stack, {
      capability: 'image.upscale',
      inputAssetIds: [uploaded.body.assets[0].id],
      resolution: '8k',
      prompt: undefined,
      width: undefined,
      height: undefined,
    });
    // Progress 10: the input is read and the resize is under way.
    await waitFor(
      async () => {
        const { body } = await stack.api(`/api/v1/jobs/${job.id}`);
        return body.job.status === 'running' && body.job.progress >= 10;
      },
      { timeoutMs: 30_000, intervalMs: 10, what: 'the upscale to be under way' },
    );
    const [dir] = workDirsOf(stack.dataDir);
    assert.ok(dir, 'the run has a work dir');
    const workDir = path.join(stack.dataDir, 'tmp', 'work', dir);
    const cancelledAt = Date.now();
    const res = await stack.api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    assert.equal(res.status, 200);
    await waitFor(() => !fs.existsSync(workDir), { timeoutMs: 10_000, intervalMs: 20, what: 'the run to end' });
    const stoppedAfter = Date.now() - cancelledAt;
    t.diagnostic(`upscale work ended ${stoppedAfter} ms after cancel`);
    assert.ok(stoppedAfter < 2_000, `the upscale kept working ${stoppedAfter} ms after the cancel`);
    assert.equal((await stack.api(`/api/v1/jobs/${job.id}`)).body.job.status, 'cancelled');
  });
});

describe('engine errors', () => {
  async function embedded(t: TestContext, behave: Behaviour) {
    const add = cleanup(t);
    const engine = testEngine(behave);
    const stack = add(await startStack({ engines: [engine.engine] }), (s) => s.stop());
    const h = add(await openDb(stack.dataDir), (x) => x.close());
    const receiver = add(await startReceiver(), (r) => r.close());
    /** Skips the retry backoff of a job handed back for another attempt. */
    const skipBackoff = (jobId: string) =>
      h.db
        .updateTable('jobs')
        .set({ run_at: Date.now() - 1 })
        .where('id', '=', jobId)
        .where('lease_owner', 'is', null)
        .where('status', 'in', ['queued', 'running'])
        .execute();
    return { engine, stack, h, receiver, skipBackoff };
  }

  test('a retryable engine error runs the job again, which then succeeds', async (t) => {
    const { engine, stack, h, skipBackoff } = await embedded(t, async (_req, _ctx, run) => {
      if (run.n === 1) throw new EngineError('provider_error', 'The provider is busy.', { retryable: true });
    });
    const job = await createJob(stack);
    await waitFor(async () => (await jobRow(h, job.id)).lease_owner === null && engine.runs.length === 1, { what: 'the job to be handed back' });
    await skipBackoff(job.id);
    const done = await waitForJob(stack, job.id, TERMINAL, 20_000);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.error, null);
    assert.equal(done.outputAssetIds.length, 1);
    assert.equal(engine.runs.length, 2);
    assert.equal((await jobRow(h, job.id)).attempts, 2);
  });

  test('a retryable error on every attempt fails the job with the engine code after 3 attempts', async (t) => {
    const { engine, stack, h, receiver, skipBackoff } = await embedded(t, async () => {
      throw new EngineError('provider_error', 'The provider is busy.', { retryable: true });
    });
    const job = await createJob(stack, { webhookUrl: receiver.url });
    const done = await waitFor(
      async () => {
        await skipBackoff(job.id);
        const { body } = await stack.api(`/api/v1/jobs/${job.id}`);
        return TERMINAL.includes(body.job.status) ? body.job : null;
      },
      { timeoutMs: 20_000, intervalMs: 50, what: 'the job to give up' },
    );
    assert.equal(done.status, 'failed');
    assert.equal(done.error.code, 'provider_error');
    assert.equal(engine.runs.length, 3);
    assert.equal((await jobRow(h, job.id)).attempts, 3);
    const hook = await waitFor(() => receiver.hooks.find((x) => x.body.job.id === job.id), { what: 'failure webhook' });
    assert.equal(hook.body.event, 'generation.failed');
  });

  test('a non-retryable engine error fails the job at once with the engine code and message', async (t) => {
    const { engine, stack, h, receiver } = await embedded(t, async () => {
      throw new EngineError('content_moderation', 'The prompt was rejected by the provider.');
    });
    const job = await createJob(stack, { webhookUrl: receiver.url });
    const done = await waitForJob(stack, job.id, TERMINAL, 20_000);
    assert.equal(done.status, 'failed');
    assert.deepEqual(done.error, { code: 'content_moderation', message: 'The prompt was rejected by the provider.' });
    assert.deepEqual(done.outputAssetIds, []);
    assert.equal(engine.runs.length, 1);
    assert.equal((await jobRow(h, job.id)).attempts, 1);
    const hook = await waitFor(() => receiver.hooks.find((x) => x.body.job.id === job.id), { what: 'failure webhook' });
    assert.equal(hook.body.event, 'generation.failed');
    assert.deepEqual(hook.body.job.error, done.error);
  });

  test('an engine that says the deadline passed expires the job', async (t) => {
    const { stack } = await embedded(t, async () => {
      throw new EngineError('provider_timeout', 'The provider task expired.', { expired: true });
    });
    const job = await createJob(stack);
    const done = await waitForJob(stack, job.id, TERMINAL, 20_000);
    assert.equal(done.status, 'expired');
    assert.equal(done.error.code, 'provider_timeout');
  });

  test('an unexpected engine crash fails the job with a stable code and no internals', async (t) => {
    const { engine, stack } = await embedded(t, async () => {
      throw new TypeError('Cannot read properties of undefined (reading "secretPath") at /srv/zhinian/engine.ts:12');
    });
    const job = await createJob(stack);
    const done = await waitForJob(stack, job.id, TERMINAL, 20_000);
    assert.equal(done.status, 'failed');
    assert.ok(done.error.code);
    assert.doesNotMatch(done.error.message, /secretPath|\/srv\//);
    assert.equal(engine.runs.length, 1);
  });
});

describe('pickup and shutdown', () => {
  test('the embedded worker picks a new job up without waiting for a poll', async (t) => {
    const add = cleanup(t);
    const engine = testEngine();
    // A one-minute poll: only the in-process wake-up can start these jobs promptly.
    const stack = add(await startStack({ engines: [engine.engine], env: { ZHINIAN_POLL_INTERVAL_MS: '60000' } }), (s) => s.stop());
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      const job = await createJob(stack);
      const done = await waitForJob(stack, job.id, TERMINAL, 10_000);
      assert.equal(done.status, 'succeeded');
      delays.push(Date.parse(done.startedAt) - Date.parse(done.createdAt));
    }
    t.diagnostic(`created → started (ms): ${delays.join(', ')}`);
    assert.ok(Math.max(...delays) < 1_000, delays.join(', '));
  });

  test('a separate worker process picks a new job up within about 250 ms', async (t) => {
    const add = cleanup(t);
    const dataDir = tempDir();
    const api = add(await startStack({ dataDir, worker: false }), (s) => s.stop());
    // Default poll interval: what a deployment gets.
    const worker = add(spawnZhinian('worker', testEnv(dataDir, { ZHINIAN_POLL_INTERVAL_MS: '' })), (c) => killAndWait(c));
    const warm = await createJob(api);
    assert.equal((await waitForJob(api, warm.id, TERMINAL, 30_000)).status, 'succeeded', worker.output());
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      await delay(Math.random() * 150); // land at different points of the poll cycle
      const job = await createJob(api);
      const done = await waitForJob(api, job.id, TERMINAL, 10_000);
      assert.equal(done.status, 'succeeded');
      delays.push(Date.parse(done.startedAt) - Date.parse(done.createdAt));
    }
    t.diagnostic(`created → started (ms): ${delays.join(', ')}`);
    assert.ok(Math.max(...delays) < 1_000, delays.join(', '));
  });

  test('SIGTERM of a worker mid-job exits promptly and hands the job to another worker', async (t) => {
    const add = cleanup(t);
    const dataDir = tempDir();
    const api = add(await startStack({ dataDir, worker: false }), (s) => s.stop());
    const h = add(await openDb(dataDir), (x) => x.close());
    const worker = add(spawnZhinian('worker', testEnv(dataDir)), (c) => killAndWait(c));
    const job = await createJob(api, {
      capability: 'video.generate',
      prompt: '品牌短视频',
      settings: { ratio: '16:9', duration: 8, resolution: '720p' },
      width: undefined,
      height: undefined,
    });
    await waitFor(
      async () => {
        const { body } = await api.api(`/api/v1/jobs/${job.id}`);
        return body.job.status === 'running' && body.job.progress > 10;
      },
      { timeoutMs: 30_000, what: 'the video to be encoding' },
    );

    const termAt = Date.now();
    const exited = new Promise<number | null>((r) => worker.once('exit', (code) => r(code)));
    worker.kill('SIGTERM');
    const code = await Promise.race([exited, delay(5_000).then(() => 'timeout' as const)]);
    assert.notEqual(code, 'timeout', 'worker did not exit within 5 s of SIGTERM');
    t.diagnostic(`worker exited ${Date.now() - termAt} ms after SIGTERM`);
    assert.equal(code, 0, worker.output());
    assert.deepEqual(ffmpegProcessesWith(dataDir), [], 'no ffmpeg left behind');

    const handedBack = await jobRow(h, job.id);
    assert.equal(handedBack.lease_owner, null, 'the job was handed back');
    assert.ok(Number(handedBack.run_at) <= Date.now(), 'and is claimable at once');
    assert.ok(!TERMINAL.includes(handedBack.status));

    add(await startStack({ dataDir, server: false }), (s) => s.stop());
    const done = await waitForJob(api, job.id, TERMINAL, 40_000);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.outputAssetIds.length, 1);
    const attempts = (await jobRow(h, job.id)).attempts;
    t.diagnostic(`attempts after hand-back: ${attempts}`);
    assert.ok(attempts <= 2, `attempts ${attempts}`);
  });
});
