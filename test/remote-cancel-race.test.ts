// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FakeResponse, RecordedRequest } from './fakes/common.ts';
import { startFakeEvolink, type FakeEvolink } from './fakes/evolink.ts';
import { FAKE_VOLC_ACCESS_KEY_ID, FAKE_VOLC_SECRET_ACCESS_KEY, startFakeJimeng, type FakeJimeng } from './fakes/jimeng.ts';
import { startFakeSeedance, type FakeSeedance } from './fakes/seedance.ts';
import { openTestDb, startStack, waitFor, type Stack } from './helpers.ts';

/**
 * A job cancelled while its submission to the provider is in flight. The fake holds the
 * submission's answer (the task already made on its side) until the job has been cancelled and
 * the worker told, so the race that lost 1 run in 3 happens every time: once the answer comes,
 * the cancel reaches the provider, exactly once (Seedance: a DELETE of the queued task).
 * Jimeng and EvoLink have no cancel: the task is not followed further and the job stays cancelled.
 */

type Provider = 'seedance' | 'jimeng' | 'evolink';

function isSubmit(provider: Provider, req: RecordedRequest): boolean {
  if (provider === 'jimeng') return req.query.Action === 'CVSync2AsyncSubmitTask';
  return req.method === 'POST';
}

function taskIdOf(provider: Provider, answer: FakeResponse): string {
  const json = answer.json as any;
  return provider === 'jimeng' ? json.data.task_id : json.id;
}

/** Requests about `taskId` after its submission: polls, cancel look-ups, DELETEs. */
function aboutTask(provider: Provider, requests: RecordedRequest[], taskId: string): RecordedRequest[] {
  return requests.filter((r) => (provider === 'jimeng' ? r.body?.task_id === taskId && !isSubmit(provider, r) : r.path.endsWith(`/${taskId}`)));
}

describe('cancel while the submission is in flight', () => {
  let stack: Stack;
  let fakes: { seedance: FakeSeedance; jimeng: FakeJimeng; evolink: FakeEvolink };

  before(async () => {
    // Seedance tasks stay queued (cancellable) for a minute.
    fakes = { seedance: await startFakeSeedance({ queuedMs: 60_000 }), jimeng: await startFakeJimeng(), evolink: await startFakeEvolink() };
    stack = await startStack({
      env: {
        ZHINIAN_PROVIDER_POLL_INTERVAL_MS: '20',
        ZHINIAN_JIMENG_BASE_URL: fakes.jimeng.baseUrl,
        ZHINIAN_VOLC_ACCESS_KEY_ID: FAKE_VOLC_ACCESS_KEY_ID,
        ZHINIAN_VOLC_SECRET_ACCESS_KEY: FAKE_VOLC_SECRET_ACCESS_KEY,
        ZHINIAN_ARK_BASE_URL: fakes.seedance.baseUrl,
        ZHINIAN_ARK_API_KEY: 'test-ark-key',
        ZHINIAN_EVOLINK_BASE_URL: fakes.evolink.baseUrl,
        ZHINIAN_EVOLINK_API_KEY: 'sk-evo-test',
      },
    });
  });
  after(async () => {
    await stack?.stop().catch(() => {});
    await Promise.all(Object.values(fakes ?? {}).map((f) => f.close().catch(() => {})));
  });

  for (const provider of ['seedance', 'jimeng', 'evolink'] as const) {
    test(`${provider}: the task made while the job was being cancelled is ${provider === 'seedance' ? 'cancelled at the provider, once' : 'not followed'}`, async () => {
      const fake = fakes[provider];
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      let taskId: string | null = null;
      fake.server.intercept = async (req, answer) => {
        if (!isSubmit(provider, req)) return answer;
        taskId = taskIdOf(provider, answer);
        await released;
        return answer;
      };
      try {
        const body =
          provider === 'seedance'
            ? { capability: 'video.generate', prompt: 'cancel in flight', settings: { duration: 4, resolution: '480p' }, engine: provider }
            : { capability: 'image.generate', prompt: 'cancel in flight', engine: provider, ...(provider === 'jimeng' ? { force_single: true } : {}) };
        const created = await stack.api('/api/v1/jobs', { method: 'POST', json: body });
        assert.equal(created.status, 201, JSON.stringify(created.body));
        const jobId = created.body.job.id;
        await waitFor(() => taskId, { what: `${provider} to receive the submission` });

        const cancelled = await stack.api(`/api/v1/jobs/${jobId}/cancel`, { method: 'POST' });
        assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
        assert.equal(cancelled.body.job.status, 'cancelled');
        // The worker has been told (in-process, before the answer above): only now does the provider answer.
        release();

        const handle = await openTestDb(stack.dataDir);
        try {
          // The run is over once the job has no owner any more.
          await waitFor(async () => (await handle.db.selectFrom('jobs').select('lease_owner').where('id', '=', jobId).executeTakeFirstOrThrow()).lease_owner === null, {
            what: 'the run to end',
          });
          if (provider === 'seedance') {
            const deletes = await waitFor(
              () => {
                const found = aboutTask(provider, fake.requests, taskId!).filter((r) => r.method === 'DELETE');
                return found.length > 0 ? found : null;
              },
              { what: 'a DELETE of the Seedance task', timeoutMs: 10_000 },
            );
            assert.equal(deletes.length, 1);
            assert.notEqual(fakes.seedance.tasks.get(taskId!)!.cancelledAtMs, null, 'the provider cancelled the task');
          } else {
            // No cancel at these providers: the task is not polled (nothing would read its result).
            assert.deepEqual(aboutTask(provider, fake.requests, taskId!), []);
          }
          assert.equal(fake.submitCount, 1, 'submitted once');
          const job = (await stack.api(`/api/v1/jobs/${jobId}`)).body.job;
          assert.equal(job.status, 'cancelled');
          assert.deepEqual(job.outputAssetIds, []);
        } finally {
          await handle.close();
        }
      } finally {
        release();
        fake.server.intercept = null;
      }
    });
  }
});
