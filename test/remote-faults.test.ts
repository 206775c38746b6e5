// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { after, before, describe, test, type TestContext } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { startFakeEvolink, type FakeEvolink, type FakeEvolinkOptions } from './fakes/evolink.ts';
import { FAKE_VOLC_ACCESS_KEY_ID, FAKE_VOLC_SECRET_ACCESS_KEY, startFakeJimeng, type FakeJimeng, type FakeJimengOptions } from './fakes/jimeng.ts';
import { startFakeSeedance, type FakeSeedance, type FakeSeedanceOptions } from './fakes/seedance.ts';
import { KEY_A, killAndWait, spawnZhinian, startReceiver, startStack, tempDir, testEnv, waitFor, waitForJob, type Stack, openTestDb } from './helpers.ts';

/**
 * Every injected provider fault, mapped onto the job lifecycle through the public API; cancel of
 * running remote jobs; a worker killed during a remote task. Fakes run on 127.0.0.1 with short
 * timings; a `[fake:<name>]` prompt token picks a fault for one task, so the jobs of one world
 * run side by side. Not covered: Seedance `quota` (QuotaExceeded waits 30 s before its first
 * retry) and Jimeng `concurrency` (50430 waits 10 s): too slow for this suite.
 */

const TERMINAL = ['succeeded', 'failed', 'expired', 'cancelled'];
type EngineName = 'jimeng' | 'seedance' | 'evolink';

interface World {
  jimeng: FakeJimeng;
  seedance: FakeSeedance;
  evolink: FakeEvolink;
  stack: Stack;
  hooks: Awaited<ReturnType<typeof startReceiver>>;
  close(): Promise<void>;
}

async function world(opts: { jimeng?: FakeJimengOptions; seedance?: FakeSeedanceOptions; evolink?: FakeEvolinkOptions; env?: Record<string, string> } = {}): Promise<World> {
  const jimeng = await startFakeJimeng(opts.jimeng);
  const seedance = await startFakeSeedance(opts.seedance);
  const evolink = await startFakeEvolink(opts.evolink);
  const hooks = await startReceiver();
  const stack = await startStack({
    env: {
      ZHINIAN_PROVIDER_POLL_INTERVAL_MS: '20',
      ZHINIAN_JIMENG_BASE_URL: jimeng.baseUrl,
      ZHINIAN_VOLC_ACCESS_KEY_ID: FAKE_VOLC_ACCESS_KEY_ID,
      ZHINIAN_VOLC_SECRET_ACCESS_KEY: FAKE_VOLC_SECRET_ACCESS_KEY,
      ZHINIAN_ARK_BASE_URL: seedance.baseUrl,
      ZHINIAN_ARK_API_KEY: 'test-ark-key',
      ZHINIAN_EVOLINK_BASE_URL: evolink.baseUrl,
      ZHINIAN_EVOLINK_API_KEY: 'sk-evo-test',
      // Jobs are woken in-process; slower idle polling keeps many worlds light on a small machine.
      ZHINIAN_POLL_INTERVAL_MS: '200',
      // Fault jobs of one world run side by side.
      ZHINIAN_JIMENG_MAX_CONCURRENCY: '50',
      ZHINIAN_ARK_MAX_CONCURRENCY: '50',
      ZHINIAN_EVOLINK_MAX_CONCURRENCY: '50',
      ...opts.env,
    },
  });
  return {
    jimeng,
    seedance,
    evolink,
    stack,
    hooks,
    async close() {
      await stack.stop().catch(() => {});
      await Promise.all([jimeng.close(), seedance.close(), evolink.close(), hooks.close()].map((p) => p.catch(() => {})));
    },
  };
}

async function worldFor(t: TestContext, opts: Parameters<typeof world>[0] = {}): Promise<World> {
  const w = await world(opts);
  t.after(() => w.close());
  return w;
}

/** A job pinned to `engine` running its capability with `prompt`. */
async function createJob(w: World, engine: EngineName, prompt: string): Promise<any> {
  const body =
    engine === 'seedance'
      ? { capability: 'video.generate', prompt, settings: { duration: 4, resolution: '480p' } }
      : { capability: 'image.generate', prompt, ...(engine === 'jimeng' ? { force_single: true } : {}) };
  const res = await w.stack.api('/api/v1/jobs', { method: 'POST', json: { ...body, engine, webhookUrl: w.hooks.url } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.job;
}

const finished = (w: World, id: string, timeoutMs = 30_000) => waitForJob(w.stack, id, TERMINAL, timeoutMs);

/** Submit calls the fake received for this prompt (accepted or not). */
function submitsOf(w: World, engine: EngineName, prompt: string): number {
  switch (engine) {
    case 'jimeng':
      return w.jimeng.requests.filter((r) => r.query.Action === 'CVSync2AsyncSubmitTask' && r.body?.prompt === prompt).length;
    case 'evolink':
      return w.evolink.requests.filter((r) => r.method === 'POST' && r.body?.prompt === prompt).length;
    case 'seedance':
      return w.seedance.requests.filter((r) => r.method === 'POST' && r.body?.content?.[0]?.text === prompt).length;
  }
}

/** The fake's task id for this prompt, once it exists. */
function taskIdOf(w: World, engine: EngineName, prompt: string): string | undefined {
  switch (engine) {
    case 'jimeng':
      return [...w.jimeng.tasks.values()].find((t) => t.body.prompt === prompt)?.id;
    case 'evolink':
      return [...w.evolink.tasks.values()].find((t) => t.body.prompt === prompt)?.id;
    case 'seedance':
      return [...w.seedance.tasks.values()].find((t) => t.body.content?.[0]?.text === prompt)?.id;
  }
}

/** Every API request about one task (polls, cancel look-ups, DELETEs). */
function taskRequests(w: World, engine: EngineName, taskId: string): { method: string }[] {
  switch (engine) {
    case 'jimeng':
      return w.jimeng.requests.filter((r) => r.query.Action === 'CVSync2AsyncGetResult' && r.body?.task_id === taskId);
    case 'evolink':
      return w.evolink.requests.filter((r) => r.path === `/v1/tasks/${taskId}`);
    case 'seedance':
      return w.seedance.requests.filter((r) => r.path.endsWith(`/tasks/${taskId}`));
  }
}

function fileRequestsOf(w: World, engine: EngineName, taskId: string) {
  return w[engine].server.fileRequests.filter((f) => f.path.startsWith(`/files/${encodeURIComponent(taskId)}/`));
}

/** Nothing about the task reaches the provider any more: one count after a settle time, another later. */
async function assertPollingStopped(w: World, engine: EngineName, taskId: string, settleMs = 500): Promise<void> {
  await delay(settleMs);
  const settled = taskRequests(w, engine, taskId).length;
  await delay(1000); // 50 poll intervals
  assert.equal(taskRequests(w, engine, taskId).length, settled, `${engine} task ${taskId} is still being polled`);
}

async function outputAssetsOf(w: World, jobId: string): Promise<any[]> {
  const res = await w.stack.api('/api/v1/assets?limit=200');
  assert.equal(res.status, 200);
  return res.body.assets.filter((a: any) => a.jobId === jobId);
}

async function hooksOf(w: World, jobId: string): Promise<any[]> {
  await waitFor(() => w.hooks.hooks.some((h) => h.body?.job?.id === jobId), { what: `webhook of ${jobId}`, timeoutMs: 10_000 });
  return w.hooks.hooks.filter((h) => h.body?.job?.id === jobId).map((h) => h.body);
}

/** A fake clock we can move forward: tasks then finish when the test says so, however slow the machine. */
function skewed() {
  const clock = { skew: 0, now: () => Date.now() + clock.skew };
  return clock;
}

interface FaultCase {
  engine: EngineName;
  scenario: string;
  status: string;
  code?: string;
  /** The provider's own words, which must reach job.error.message. */
  message?: RegExp;
  submits?: number;
  /** Result-file requests: `url_expired` is re-polled once, so 2 (both 403). */
  fileForbidden?: number;
}

const TOKEN_CASES: FaultCase[] = [
  // Jimeng
  { engine: 'jimeng', scenario: 'moderation_submit', status: 'failed', code: 'content_moderation', message: /Text Risk Not Pass/, submits: 1 },
  { engine: 'jimeng', scenario: 'moderation_result', status: 'failed', code: 'content_moderation', message: /Post Img Risk Not Pass/, submits: 1 },
  { engine: 'jimeng', scenario: 'provider_expired', status: 'expired', code: 'provider_timeout', submits: 1 },
  { engine: 'jimeng', scenario: 'task_lost', status: 'failed', code: 'provider_task_lost', submits: 1 },
  { engine: 'jimeng', scenario: 'url_expired', status: 'failed', code: 'output_unavailable', submits: 1, fileForbidden: 2 },
  { engine: 'jimeng', scenario: 'poll_rate_limit', status: 'succeeded', submits: 1 },
  { engine: 'jimeng', scenario: 'poll_server_error', status: 'succeeded', submits: 1 },
  // Seedance
  { engine: 'seedance', scenario: 'moderation_submit', status: 'failed', code: 'content_moderation', message: /input text may contain sensitive information/, submits: 1 },
  { engine: 'seedance', scenario: 'moderation_result', status: 'failed', code: 'content_moderation', message: /output video may contain sensitive information/, submits: 1 },
  { engine: 'seedance', scenario: 'provider_expired', status: 'expired', code: 'provider_timeout', submits: 1 },
  { engine: 'seedance', scenario: 'task_lost', status: 'failed', code: 'provider_task_lost', submits: 1 },
  { engine: 'seedance', scenario: 'url_expired', status: 'failed', code: 'output_unavailable', submits: 1, fileForbidden: 2 },
  { engine: 'seedance', scenario: 'set_limit', status: 'failed', code: 'quota_exceeded', message: /inference limit you set/, submits: 1 },
  { engine: 'seedance', scenario: 'bad_auth', status: 'failed', code: 'provider_auth', message: /API key in the request is missing or invalid/, submits: 1 },
  // EvoLink (no expiry status: a generation timeout is a failure)
  { engine: 'evolink', scenario: 'moderation_submit', status: 'failed', code: 'content_moderation', message: /rejected by the safety system/, submits: 1 },
  { engine: 'evolink', scenario: 'moderation_result', status: 'failed', code: 'content_moderation', message: /blocked by the content policy/, submits: 1 },
  { engine: 'evolink', scenario: 'timeout', status: 'failed', code: 'provider_timeout', message: /Generation timed out/, submits: 1 },
  { engine: 'evolink', scenario: 'provider_expired', status: 'failed', code: 'provider_timeout', submits: 1 },
  { engine: 'evolink', scenario: 'quota', status: 'failed', code: 'quota_exceeded', message: /credit balance is too low/, submits: 1 },
  { engine: 'evolink', scenario: 'task_lost', status: 'failed', code: 'provider_task_lost', submits: 1 },
  { engine: 'evolink', scenario: 'url_expired', status: 'failed', code: 'output_unavailable', submits: 1, fileForbidden: 2 },
  { engine: 'evolink', scenario: 'result_data_only', status: 'succeeded', submits: 1 },
  { engine: 'evolink', scenario: 'bad_auth', status: 'failed', code: 'provider_auth', message: /Invalid API key/, submits: 1 },
];

describe('remote faults', { concurrency: 3 }, () => {
  test('a worker SIGKILLed during remote tasks: a new worker resumes polling the stored tasks; nothing is submitted twice', async (t) => {
    // The fakes' clock is ours: the tasks run until we let them finish, however slow the machine.
    const clock = skewed();
    const jimeng = await startFakeJimeng({ queuedMs: 100, runningMs: 600_000, now: clock.now });
    const seedance = await startFakeSeedance({ queuedMs: 100, runningMs: 600_000, now: clock.now });
    t.after(() => Promise.all([jimeng.close(), seedance.close()]));
    const dataDir = tempDir();
    const env = testEnv(dataDir, {
      ZHINIAN_PROVIDER_POLL_INTERVAL_MS: '20',
      ZHINIAN_JIMENG_BASE_URL: jimeng.baseUrl,
      ZHINIAN_VOLC_ACCESS_KEY_ID: FAKE_VOLC_ACCESS_KEY_ID,
      ZHINIAN_VOLC_SECRET_ACCESS_KEY: FAKE_VOLC_SECRET_ACCESS_KEY,
      ZHINIAN_ARK_BASE_URL: seedance.baseUrl,
      ZHINIAN_ARK_API_KEY: 'test-ark-key',
      ZHINIAN_JOB_LEASE_SECONDS: '2',
    });
    // The workers are real processes (the fakes, in this one, outlive the kill); the API runs here.
    const first = spawnZhinian('worker', env);
    t.after(() => killAndWait(first));
    const api = await startStack({ dataDir, worker: false, env });
    t.after(() => api.stop());
    const h = await openTestDb(dataDir);
    t.after(() => h.close());

    const create = async (body: object) => {
      const res = await api.api('/api/v1/jobs', { method: 'POST', json: body });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body.job.id as string;
    };
    const image = await create({ engine: 'jimeng', capability: 'image.generate', prompt: 'survives a crash', force_single: true });
    const video = await create({ engine: 'seedance', capability: 'video.generate', prompt: 'survives a crash', settings: { duration: 4, resolution: '480p' } });
    const submitted = async (id: string) => {
      const row = await h.db.selectFrom('jobs').select('engine_state').where('id', '=', id).executeTakeFirst();
      return row?.engine_state ? JSON.parse(row.engine_state).phase === 'submitted' : false;
    };
    await waitFor(async () => (await submitted(image)) && (await submitted(video)), { timeoutMs: 45_000, what: `both tasks submitted (${first.output()})` });
    // Polled at least once, so the kill lands in the middle of the remote tasks.
    await waitFor(() => jimeng.requests.length >= 2 && seedance.requests.length >= 2, { what: 'the first worker to poll' });
    assert.equal(jimeng.submitCount, 1);
    assert.equal(seedance.submitCount, 1);

    await killAndWait(first, 'SIGKILL');
    const requestsAtKill = { jimeng: jimeng.requests.length, seedance: seedance.requests.length };
    const second = spawnZhinian('worker', env);
    t.after(() => killAndWait(second));
    await waitFor(() => jimeng.requests.length > requestsAtKill.jimeng && seedance.requests.length > requestsAtKill.seedance, {
      timeoutMs: 45_000,
      what: `the second worker to poll the stored tasks (${second.output()})`,
    });
    clock.skew = 600_000; // the provider finishes both tasks

    for (const id of [image, video]) {
      const job = await waitForJob(api, id, TERMINAL, 30_000);
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
      assert.equal(job.outputAssetIds.length, 1);
      const row = await h.db.selectFrom('jobs').select('attempts').where('id', '=', id).executeTakeFirstOrThrow();
      assert.equal(row.attempts, 2, 'the second worker ran it');
      const res = await fetch(`${api.url}/api/v1/assets/${job.outputAssetIds[0]}/download`, { headers: { authorization: `Bearer ${KEY_A}` } });
      assert.equal(res.status, 200);
    }
    assert.equal(jimeng.submitCount, 1, 'jimeng: exactly one submit');
    assert.equal(seedance.submitCount, 1, 'seedance: exactly one create');
    assert.equal(jimeng.tasks.size, 1);
    assert.equal(seedance.tasks.size, 1);
  });

  describe('per-task faults map onto the job lifecycle', { concurrency: true }, () => {
    let w: World;
    before(async () => {
      w = await world();
    });
    after(() => w?.close());

    for (const c of TOKEN_CASES) {
      test(`${c.engine} ${c.scenario} → ${c.status}${c.code ? ` / ${c.code}` : ''}`, async () => {
        const prompt = `[fake:${c.scenario}] ${c.engine} case`;
        const job = await finished(w, (await createJob(w, c.engine, prompt)).id);
        assert.equal(job.status, c.status, JSON.stringify(job.error));
        assert.equal(job.engine, c.engine);
        if (c.status === 'succeeded') {
          assert.equal(job.outputAssetIds.length, 1);
        } else {
          assert.equal(job.outputAssetIds.length, 0);
          assert.equal(job.error?.code, c.code, JSON.stringify(job.error));
          assert.ok(job.error.message.length > 0);
          if (c.message) assert.match(job.error.message, c.message);
          assert.doesNotMatch(job.error.message, /signature=/, 'no signed query in the message');
        }
        if (c.submits !== undefined) assert.equal(submitsOf(w, c.engine, prompt), c.submits, 'submits');
        if (c.fileForbidden !== undefined) {
          const files = fileRequestsOf(w, c.engine, taskIdOf(w, c.engine, prompt)!);
          assert.deepEqual(
            files.map((f) => f.status),
            Array(c.fileForbidden).fill(403),
            'the result link is tried, re-polled once, tried again',
          );
        }
        const [hook] = await hooksOf(w, job.id);
        assert.equal(hook.event, `generation.${c.status}`);
        assert.deepEqual(hook.job.error, job.error);
      });
    }

    test('evolink cancelled by the provider → the job does not succeed', async () => {
      const job = await finished(w, (await createJob(w, 'evolink', '[fake:cancelled] evolink case')).id);
      assert.ok(['cancelled', 'failed'].includes(job.status), job.status);
      assert.equal(job.outputAssetIds.length, 0);
      assert.notEqual(job.error?.code, 'internal_error');
    });

    test('jimeng prompt over 800 characters → failed / invalid_input without contacting the provider', async () => {
      const prompt = `too long ${'字'.repeat(800)}`;
      const job = await finished(w, (await createJob(w, 'jimeng', prompt)).id);
      assert.equal(job.status, 'failed');
      assert.equal(job.error.code, 'invalid_input');
      assert.equal(submitsOf(w, 'jimeng', prompt), 0);
    });
  });

  describe('call-level faults', { concurrency: 4 }, () => {
    const retried: [EngineName, string, number, number][] = [
      // engine, scenario, times, submits expected
      ['jimeng', 'rate_limit', 1, 2],
      ['jimeng', 'server_error', 2, 3],
      ['jimeng', 'bad_gateway', 1, 2],
      ['seedance', 'rate_limit', 1, 2],
      ['seedance', 'server_error', 2, 3],
      ['evolink', 'rate_limit', 2, 3],
      ['evolink', 'server_error', 2, 3],
    ];
    for (const [engine, scenario, times, submits] of retried) {
      test(`${engine} ${scenario} on the first ${times} submit(s) → waits, retries, succeeds with ${submits} submits`, async (t) => {
        const w = await worldFor(t);
        w[engine].setScenario(scenario, { times });
        const startedAt = Date.now();
        const prompt = `${engine} ${scenario} retried`;
        const job = await finished(w, (await createJob(w, engine, prompt)).id);
        assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
        assert.equal(job.outputAssetIds.length, 1);
        assert.equal(submitsOf(w, engine, prompt), submits);
        assert.equal(w[engine].tasks.size, 1, 'one task at the provider');
        if (engine === 'evolink') {
          const keys = new Set(w.evolink.requests.filter((r) => r.method === 'POST').map((r) => r.headers['idempotency-key']));
          assert.deepEqual([...keys], [`${job.id}:1`], 'every retry carries the same Idempotency-Key');
          // EvoLink's 429 says Retry-After: 1.
          if (scenario === 'rate_limit') assert.ok(Date.now() - startedAt >= times * 1000 - 50, `waited ${Date.now() - startedAt} ms`);
        }
      });
    }

    test('jimeng with the wrong secret: the fake rejects the signature → failed / provider_auth, not retried', async (t) => {
      const w = await worldFor(t, { env: { ZHINIAN_VOLC_SECRET_ACCESS_KEY: 'd3Jvbmctc2VjcmV0' } });
      const job = await finished(w, (await createJob(w, 'jimeng', 'signed wrongly')).id);
      assert.equal(job.status, 'failed');
      assert.equal(job.error.code, 'provider_auth');
      assert.match(job.error.message, /SignatureDoesNotMatch/);
      assert.equal(submitsOf(w, 'jimeng', 'signed wrongly'), 1);
      assert.equal(w.jimeng.tasks.size, 0);
    });

    test('jimeng bad_auth → failed / provider_auth', async (t) => {
      const w = await worldFor(t);
      w.jimeng.setScenario('bad_auth');
      const job = await finished(w, (await createJob(w, 'jimeng', 'bad auth')).id);
      assert.equal(job.status, 'failed');
      assert.equal(job.error.code, 'provider_auth');
      assert.equal(submitsOf(w, 'jimeng', 'bad auth'), 1);
    });

    test('evolink refusing a parameter (HTTP 400) → failed / invalid_input with the provider message', async (t) => {
      const w = await worldFor(t, { env: { ZHINIAN_EVOLINK_IMAGE_MODEL: 'no-such-model' } });
      const job = await finished(w, (await createJob(w, 'evolink', 'unknown model')).id);
      assert.equal(job.status, 'failed');
      assert.equal(job.error.code, 'invalid_input');
      assert.match(job.error.message, /model no-such-model is not supported/);
      assert.equal(w.evolink.submitCount, 1);
    });

    test('tasks that never finish: the job expires at ZHINIAN_JOB_TIMEOUT_SECONDS and polling stops', async (t) => {
      const w = await worldFor(t, { env: { ZHINIAN_JOB_TIMEOUT_SECONDS: '1' } });
      const engines: EngineName[] = ['jimeng', 'seedance', 'evolink'];
      await Promise.all(
        engines.map(async (engine) => {
          const prompt = `[fake:never_finish] ${engine} forever`;
          const job = await finished(w, (await createJob(w, engine, prompt)).id, 15_000);
          assert.equal(job.status, 'expired', `${engine}: ${JSON.stringify(job.error)}`);
          assert.ok(job.error?.code, `${engine}: an error code`);
          assert.equal(job.outputAssetIds.length, 0);
          // A deadline is noticed at the worker's next lease check (every 500 ms), a cancel at once.
          await assertPollingStopped(w, engine, taskIdOf(w, engine, prompt)!, 1500);
        }),
      );
    });

    test('rate-limited until the job timeout → failed / rate_limited', async (t) => {
      const w = await worldFor(t, { env: { ZHINIAN_JOB_TIMEOUT_SECONDS: '3' } });
      const prompt = '[fake:rate_limit] never let in';
      const job = await finished(w, (await createJob(w, 'evolink', prompt)).id, 20_000);
      assert.ok(submitsOf(w, 'evolink', prompt) >= 2, 'kept waiting (Retry-After: 1) and retrying');
      assert.equal(job.status, 'failed', JSON.stringify(job));
      assert.equal(job.error.code, 'rate_limited');
    });
  });

  describe('cancel of a running remote job', { concurrency: 3 }, () => {
    async function cancel(w: World, jobId: string): Promise<void> {
      const res = await w.stack.api(`/api/v1/jobs/${jobId}/cancel`, { method: 'POST' });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.job.status, 'cancelled');
    }

    /** Running at our side, and the provider has the task: returns its id. */
    async function runningTask(w: World, engine: EngineName, prompt: string, jobId: string): Promise<string> {
      return waitFor(
        async () => {
          const { body } = await w.stack.api(`/api/v1/jobs/${jobId}`);
          const id = taskIdOf(w, engine, prompt);
          return body.job.status === 'running' && id && taskRequests(w, engine, id).length > 0 ? id : null;
        },
        { what: `${engine} task to be polled` },
      );
    }

    async function stillCancelled(w: World, jobId: string): Promise<void> {
      const { body } = await w.stack.api(`/api/v1/jobs/${jobId}`);
      assert.equal(body.job.status, 'cancelled');
      assert.deepEqual(body.job.outputAssetIds, []);
      assert.deepEqual(await outputAssetsOf(w, jobId), [], 'no output asset appeared');
      const events = (await hooksOf(w, jobId)).map((h) => h.event);
      assert.deepEqual(events, ['generation.cancelled']);
    }

    test('seedance, task still queued: the provider gets a DELETE and cancels it; polling stops', async (t) => {
      const w = await worldFor(t, { seedance: { queuedMs: 60_000, runningMs: 100 } });
      const prompt = 'cancel me while queued';
      const job = await createJob(w, 'seedance', prompt);
      const taskId = await runningTask(w, 'seedance', prompt, job.id);
      await cancel(w, job.id);
      const deleted = await waitFor(() => w.seedance.requests.some((r) => r.method === 'DELETE' && r.path.endsWith(`/tasks/${taskId}`)), {
        what: 'a DELETE of the Seedance task',
        timeoutMs: 3000,
      }).catch(() => false);
      assert.ok(deleted, 'Seedance got no DELETE for the cancelled job');
      assert.notEqual(w.seedance.tasks.get(taskId)!.cancelledAtMs, null, 'the provider cancelled the task');
      await assertPollingStopped(w, 'seedance', taskId);
      await stillCancelled(w, job.id);
    });

    test('seedance, task already running (too late to DELETE): the job stays cancelled after the provider succeeds', async (t) => {
      const clock = skewed();
      const w = await worldFor(t, { seedance: { queuedMs: 50, runningMs: 600_000, now: clock.now } });
      const prompt = 'cancel me while running';
      const job = await createJob(w, 'seedance', prompt);
      const taskId = await runningTask(w, 'seedance', prompt, job.id);
      const task = w.seedance.tasks.get(taskId)!;
      await waitFor(() => w.seedance.server.clock.phaseOf(task.createdAtMs) === 'running', { what: 'the task to run' });
      await cancel(w, job.id);
      await assertPollingStopped(w, 'seedance', taskId);
      clock.skew = 600_000; // the provider finishes the task
      assert.equal(w.seedance.server.clock.phaseOf(task.createdAtMs), 'finished');
      await delay(300);
      await stillCancelled(w, job.id);
      assert.equal(fileRequestsOf(w, 'seedance', taskId).length, 0, 'the result was never fetched');
    });

    for (const engine of ['jimeng', 'evolink'] as const) {
      test(`${engine} (no cancel endpoint): cancelled locally, polling stops, stays cancelled after the provider succeeds`, async (t) => {
        const clock = skewed();
        const w = await worldFor(t, { [engine]: { queuedMs: 50, runningMs: 600_000, now: clock.now } });
        const prompt = `cancel ${engine}`;
        const job = await createJob(w, engine, prompt);
        const taskId = await runningTask(w, engine, prompt, job.id);
        await cancel(w, job.id);
        await assertPollingStopped(w, engine, taskId);
        clock.skew = 600_000; // the provider finishes the task
        await delay(300);
        await stillCancelled(w, job.id);
        assert.equal(fileRequestsOf(w, engine, taskId).length, 0);
        assert.equal(w[engine].tasks.size, 1);
      });
    }

    test('cancel while the result downloads: the job stays cancelled and no output appears', async (t) => {
      const w = await worldFor(t, { evolink: { slowFile: { chunkBytes: 512, intervalMs: 100 } } }); // ~3 s for the 16 KB PNG
      const prompt = 'cancel during download';
      const job = await createJob(w, 'evolink', prompt);
      await waitFor(() => w.evolink.server.fileRequests.length > 0, { what: 'the result download to start' });
      await cancel(w, job.id);
      await delay(3500); // past the end of the throttled download
      await stillCancelled(w, job.id);
    });
  });
});
