// @backends sqlite,postgres
/**
 * Every `statusDetail` code (CONTRACT "Why a job waits, and its history") produced by a real run
 * and read from `GET /api/v1/jobs/:id`: real stacks, in-test engines behind the engine seam, and
 * the fake providers on loopback. No row is forged: each job gets where it is by the queue's own
 * doing, and `retryAt` is checked against when the job is really tried again.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import sharp from 'sharp';
import { STATUS_DETAIL_CODES } from '../src/contract/index.ts';
import type { DbHandle } from '../src/db/index.ts';
import { EngineError, type Engine, type EngineRequest, type RunContext } from '../src/engines/engine.ts';
import type { FakeResponse } from './fakes/common.ts';
import { startFakeEvolink, type FakeEvolink, type FakeEvolinkOptions } from './fakes/evolink.ts';
import { cleanup, openTestDb, startStack, waitFor, waitForJob, type Stack } from './helpers.ts';

const PNG = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#2060c0' } })
  .png()
  .toBuffer();
const TERMINAL = ['succeeded', 'failed', 'expired', 'cancelled'];
/** Conditions below wait this long at most: generous for a busy machine. */
const PATIENCE_MS = 30_000;
/** Timers may fire a millisecond or so early, and times are stored in whole milliseconds. */
const TIMER_SLACK_MS = 20;

interface EngineRun {
  jobId: string;
  /** 1 for the job's first run, 2 for the second… */
  n: number;
  startedAt: number;
}

/** A local engine in this process; `behave` decides what each run does before it writes its image. */
function testEngine(behave: (req: EngineRequest, ctx: RunContext, run: EngineRun) => Promise<void>) {
  const runs: EngineRun[] = [];
  const engine: Engine = {
    name: 'test',
    capabilities: ['image.generate'],
    async run(req, ctx) {
      const run = { jobId: req.jobId, n: runs.filter((r) => r.jobId === req.jobId).length + 1, startedAt: Date.now() };
      runs.push(run);
      await behave(req, ctx, run);
      const file = path.join(ctx.workDir, 'out.png');
      await fsp.writeFile(file, PNG);
      return [{ path: file, kind: 'image', mimeType: 'image/png' }];
    },
  };
  return { engine, runs };
}

/** Resolves when the run is aborted (the worker stops, the job is cancelled). */
function aborted(signal: AbortSignal) {
  return new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

async function createJob(stack: Stack, body: Record<string, unknown> = {}): Promise<string> {
  const res = await stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'a blue heron', ...body } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.job.id;
}

async function jobOf(stack: Stack, id: string): Promise<any> {
  const res = await stack.api(`/api/v1/jobs/${id}`);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.ok('statusDetail' in res.body.job, 'the job always has statusDetail');
  return res.body.job;
}

/** The codes the scenarios below produced. */
const produced = new Set<string>();

/** Polls the API until the job's statusDetail has `code`; returns the job and when it was seen. */
async function untilDetail(stack: Stack, id: string, code: string, status?: string, also: (job: any) => boolean = () => true): Promise<{ job: any; seenAt: number }> {
  let last: unknown = null;
  return waitFor(
    async () => {
      const job = await jobOf(stack, id);
      last = { status: job.status, statusDetail: job.statusDetail };
      return job.statusDetail?.code === code && (status === undefined || job.status === status) && also(job) ? { job, seenAt: Date.now() } : null;
    },
    { timeoutMs: PATIENCE_MS, intervalMs: 20, what: `job ${id} to show ${code} (last seen: ${JSON.stringify(last)})` },
  );
}

function assertShape(detail: any, code: string) {
  produced.add(code);
  assert.deepEqual(Object.keys(detail).sort(), ['code', 'message', 'retryAt']);
  assert.equal(detail.code, code);
  assert.equal(typeof detail.message, 'string');
  assert.ok(detail.message.length > 0);
}

async function evolinkWorld(t: TestContext, opts: { fake?: FakeEvolinkOptions; env?: Record<string, string>; clock?: { now(): number } } = {}) {
  const add = cleanup(t);
  const evolink = add(await startFakeEvolink(opts.fake), (f) => f.close());
  const stack = add(
    await startStack({
      clock: opts.clock,
      env: {
        ZHINIAN_EVOLINK_BASE_URL: evolink.baseUrl,
        ZHINIAN_EVOLINK_API_KEY: 'sk-evo-test',
        ZHINIAN_PROVIDER_POLL_INTERVAL_MS: '20',
        ...opts.env,
      },
    }),
    (s) => s.stop(),
  );
  const h = add(await openTestDb(stack.dataDir), (d) => d.close());
  return { evolink, stack, h };
}

/** EvoLink's "too many requests", asking to come back in 3 s. */
const TOO_MANY_REQUESTS: FakeResponse = {
  status: 429,
  json: { error: { code: 'rate_limit_exceeded', message: 'Too many requests, please retry later.', type: 'rate_limit_error', param: null } },
  headers: { 'retry-after': '3' },
};

const evolinkSubmits = (evolink: FakeEvolink, prompt: string) => evolink.requests.filter((r) => r.method === 'POST' && r.body?.prompt === prompt).length;
const taskIdOf = (evolink: FakeEvolink, prompt: string) => [...evolink.tasks.values()].find((task) => task.body.prompt === prompt)?.id;
const jobRow = (h: DbHandle, id: string) => h.db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

/** A clock the test moves forward (the stack's, or a fake provider's). */
function skewed() {
  const clock = { skew: 0, now: () => Date.now() + clock.skew };
  return clock;
}

describe('statusDetail from real runs', () => {
  test('client_running_cap while the client runs its maxRunning jobs; null for a job being worked on and for an ended one', async (t) => {
    const add = cleanup(t);
    const release = new Map<string, () => void>();
    const { engine, runs } = testEngine(
      (req, ctx) =>
        new Promise<void>((resolve) => {
          release.set(req.jobId, resolve);
          void aborted(ctx.signal).then(resolve);
        }),
    );
    // Worker slots are not what holds the second job back: the client's cap is.
    const stack = add(await startStack({ engines: [engine], env: { ZHINIAN_CLIENT_MAX_RUNNING: '1', ZHINIAN_WORKER_CONCURRENCY: '4' } }), (s) => s.stop());

    const first = await createJob(stack);
    await waitFor(() => runs.some((r) => r.jobId === first), { timeoutMs: PATIENCE_MS, what: 'the first job to run' });
    const second = await createJob(stack);
    const { job } = await untilDetail(stack, second, 'client_running_cap', 'queued');
    assertShape(job.statusDetail, 'client_running_cap');
    assert.match(job.statusDetail.message, /maxRunning 1/);
    assert.equal(job.statusDetail.retryAt, null);
    const listed = await stack.api('/api/v1/jobs?status=queued');
    assert.deepEqual(listed.body.jobs.find((j: any) => j.id === second)?.statusDetail, job.statusDetail, 'the list says the same');

    const running = await jobOf(stack, first);
    assert.equal(running.status, 'running');
    assert.equal(running.statusDetail, null, 'a job simply being worked on has no detail');
    assert.equal(runs.filter((r) => r.jobId === second).length, 0, 'the cap held the second job back');

    release.get(first)!();
    const done = await waitForJob(stack, first, TERMINAL, PATIENCE_MS);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.statusDetail, null, 'an ended job has no detail');
    // The slot is free: the second job starts and is simply worked on.
    await waitFor(() => runs.some((r) => r.jobId === second), { timeoutMs: PATIENCE_MS, what: 'the second job to run once the first ended' });
    const now = await jobOf(stack, second);
    assert.equal(now.status, 'running');
    assert.equal(now.statusDetail, null);
    release.get(second)!();
    assert.equal((await waitForJob(stack, second, TERMINAL, PATIENCE_MS)).statusDetail, null);
  });

  test('null for a queued job simply waiting its turn (a worker slot, no cap)', async (t) => {
    const add = cleanup(t);
    const { engine, runs } = testEngine((_req, ctx) => aborted(ctx.signal));
    const stack = add(await startStack({ engines: [engine], env: { ZHINIAN_WORKER_CONCURRENCY: '1' } }), (s) => s.stop());
    const first = await createJob(stack);
    await waitFor(() => runs.some((r) => r.jobId === first), { timeoutMs: PATIENCE_MS, what: 'the first job to run' });
    const second = await createJob(stack);
    const job = await jobOf(stack, second);
    assert.equal(job.status, 'queued');
    assert.equal(job.statusDetail, null);
    assert.equal((await jobOf(stack, first)).statusDetail, null);
  });

  test('retry_backoff after a transient failure: attempt n of m, retryAt = when it is run again', async (t) => {
    const add = cleanup(t);
    const { engine, runs } = testEngine(async (_req, _ctx, run) => {
      throw new EngineError('provider_error', `The provider is busy (run ${run.n}).`, { retryable: true });
    });
    const stack = add(await startStack({ engines: [engine], env: { ZHINIAN_MAX_ATTEMPTS: '4' } }), (s) => s.stop());
    const h = add(await openTestDb(stack.dataDir), (d) => d.close());
    const id = await createJob(stack);

    const first = await untilDetail(stack, id, 'retry_backoff');
    assertShape(first.job.statusDetail, 'retry_backoff');
    assert.equal(first.job.status, 'running', 'given back, not queued');
    assert.match(first.job.statusDetail.message, /Attempt 1 of 4/);
    const retryAt = Date.parse(first.job.statusDetail.retryAt);
    assert.equal(retryAt, Number((await jobRow(h, id)).run_at), 'retryAt is when the job may be claimed again');
    assert.ok(retryAt > first.seenAt - 2_500 && retryAt <= first.seenAt + 2_000 + TIMER_SLACK_MS, 'the first retry waits 2 s');

    // It is tried again then, not before.
    const second = await waitFor(() => runs.find((r) => r.jobId === id && r.n === 2), { timeoutMs: PATIENCE_MS, what: 'the second run' });
    assert.ok(second.startedAt >= retryAt - TIMER_SLACK_MS, `run 2 started ${retryAt - second.startedAt} ms before retryAt`);
    const again = await untilDetail(stack, id, 'retry_backoff');
    assert.match(again.job.statusDetail.message, /Attempt 2 of 4/);
    assert.ok(Date.parse(again.job.statusDetail.retryAt) > retryAt);

    const cancelled = await stack.api(`/api/v1/jobs/${id}/cancel`, { method: 'POST' });
    assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
    assert.equal(cancelled.body.job.status, 'cancelled');
    assert.equal((await jobOf(stack, id)).statusDetail, null);
  });

  test('at_provider while the provider runs the task; engine_busy for the job waiting for the engine capped at 1', async (t) => {
    const providerClock = skewed();
    const { evolink, stack } = await evolinkWorld(t, {
      fake: { queuedMs: 50, runningMs: 600_000, now: providerClock.now },
      env: { ZHINIAN_EVOLINK_MAX_CONCURRENCY: '1', ZHINIAN_WORKER_CONCURRENCY: '4' },
    });
    const first = await createJob(stack, { engine: 'evolink', prompt: 'first at the provider' });
    const atProvider = await untilDetail(stack, first, 'at_provider', 'running');
    assertShape(atProvider.job.statusDetail, 'at_provider');
    const taskId = taskIdOf(evolink, 'first at the provider');
    assert.ok(taskId, 'the provider has the task');
    assert.ok(atProvider.job.statusDetail.message.includes(taskId), `the message names task ${taskId}`);
    assert.equal(atProvider.job.statusDetail.retryAt, null);

    const second = await createJob(stack, { engine: 'evolink', prompt: 'second waits for the engine' });
    const busy = await untilDetail(stack, second, 'engine_busy', 'queued');
    assertShape(busy.job.statusDetail, 'engine_busy');
    assert.match(busy.job.statusDetail.message, /evolink/);
    assert.match(busy.job.statusDetail.message, /1 at once/);
    assert.equal(busy.job.statusDetail.retryAt, null);
    assert.equal(evolinkSubmits(evolink, 'second waits for the engine'), 0, 'the cap held it back');

    providerClock.skew += 600_000; // the provider finishes the first task
    const done = await waitForJob(stack, first, TERMINAL, PATIENCE_MS);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.statusDetail, null);
    // The slot is free: the second job reaches the provider.
    await untilDetail(stack, second, 'at_provider', 'running');
    providerClock.skew += 600_000;
    const secondDone = await waitForJob(stack, second, TERMINAL, PATIENCE_MS);
    assert.equal(secondDone.status, 'succeeded', JSON.stringify(secondDone.error));
    assert.equal(secondDone.statusDetail, null);
  });

  test('provider_rate_limited while the provider answers 429 with Retry-After, at submit and at a poll of the task; retryAt = the next try', async (t) => {
    const { evolink, stack, h } = await evolinkWorld(t);
    // The first submit and the first poll of the task are refused (Retry-After: 3 s); times as the provider saw them.
    const calls: { kind: 'submit' | 'poll'; at: number; status: number }[] = [];
    const refuse = { submit: 1, poll: 1 };
    evolink.server.intercept = (req, answer) => {
      const kind = req.method === 'POST' ? 'submit' : 'poll';
      const out = refuse[kind]-- > 0 ? TOO_MANY_REQUESTS : answer;
      calls.push({ kind, at: Date.now(), status: out.status });
      return out;
    };
    const id = await createJob(stack, { engine: 'evolink', prompt: 'let in after a wait' });

    for (const kind of ['submit', 'poll'] as const) {
      const refused = await waitFor(() => calls.find((c) => c.kind === kind && c.status === 429), { timeoutMs: PATIENCE_MS, what: `a refused ${kind}` });
      const { job } = await untilDetail(stack, id, 'provider_rate_limited', 'running', (j) => Date.parse(j.statusDetail.retryAt) > refused.at);
      assertShape(job.statusDetail, 'provider_rate_limited');
      assert.match(job.statusDetail.message, /too many requests/);
      const retryAt = Date.parse(job.statusDetail.retryAt);
      assert.ok(retryAt >= refused.at + 3_000 - TIMER_SLACK_MS && retryAt <= refused.at + 3_000 + 3_000, `${kind}: retryAt ${retryAt - refused.at} ms after the refusal`);
      const phase = JSON.parse((await jobRow(h, id)).engine_state ?? 'null')?.phase;
      assert.equal(phase, kind === 'submit' ? 'submitting' : 'submitted', `${kind}: the task is ${kind === 'poll' ? '' : 'not yet '}at the provider`);
      // The provider is asked again when Retry-After said, not before.
      const next = await waitFor(() => calls.find((c) => c.kind === kind && c.at > refused.at), { timeoutMs: PATIENCE_MS, what: `the next ${kind}` });
      assert.ok(next.at >= retryAt - TIMER_SLACK_MS, `${kind}: asked again ${retryAt - next.at} ms before retryAt`);
    }

    const done = await waitForJob(stack, id, TERMINAL, PATIENCE_MS);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.statusDetail, null);
    assert.equal(evolink.tasks.size, 1, 'one task at the provider');
  });

  test('engine_circuit_open after five provider failures in a row; retryAt = when the engine is tried again', async (t) => {
    const clock = skewed();
    const { evolink, stack, h } = await evolinkWorld(t, { clock });
    // Five jobs pinned to EvoLink fail with provider_auth: each counts against its circuit.
    const failing = await Promise.all([1, 2, 3, 4, 5].map((i) => createJob(stack, { engine: 'evolink', prompt: `[fake:bad_auth] failure ${i}` })));
    for (const id of failing) {
      const job = await waitForJob(stack, id, TERMINAL, PATIENCE_MS);
      assert.equal(job.error?.code, 'provider_auth', JSON.stringify(job.error));
    }
    const circuit = await waitFor(() => h.db.selectFrom('engine_circuits').selectAll().where('engine', '=', 'evolink').where('open_until', 'is not', null).executeTakeFirst(), {
      timeoutMs: PATIENCE_MS,
      what: 'the circuit to open',
    });
    assert.ok(Number(circuit.consecutive_failures) >= 5);

    // Pinned, so it waits for EvoLink instead of moving to another engine.
    const prompt = 'waits for the circuit';
    let submittedAt: number | null = null; // on the stack's clock
    evolink.server.intercept = (req, answer) => {
      if (req.method === 'POST' && req.body?.prompt === prompt) submittedAt ??= clock.now();
      return answer;
    };
    const id = await createJob(stack, { engine: 'evolink', prompt });
    const open = await untilDetail(stack, id, 'engine_circuit_open', 'queued');
    assertShape(open.job.statusDetail, 'engine_circuit_open');
    assert.match(open.job.statusDetail.message, /evolink/);
    const retryAt = Date.parse(open.job.statusDetail.retryAt);
    assert.equal(retryAt, Number(circuit.open_until), 'retryAt is when the circuit lets a probe through');
    assert.ok(retryAt > clock.now());
    assert.equal(evolinkSubmits(evolink, prompt), 0, 'no new work for an open circuit');

    // Time reaches retryAt: this job is the probe, and the engine is tried again.
    clock.skew += retryAt - clock.now() + 1;
    const done = await waitForJob(stack, id, TERMINAL, PATIENCE_MS);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.equal(evolinkSubmits(evolink, prompt), 1);
    assert.ok(submittedAt !== null && submittedAt >= retryAt, `tried again ${retryAt - (submittedAt ?? 0)} ms before retryAt`);
    assert.equal(done.statusDetail, null);
  });

  test('every code of the contract was produced by a scenario above', () => {
    assert.deepEqual([...produced].sort(), [...STATUS_DETAIL_CODES].sort());
  });
});
