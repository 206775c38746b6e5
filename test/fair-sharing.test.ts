// @backends sqlite,postgres
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test, type TestContext } from 'node:test';
import sharp from 'sharp';
import type { DbHandle } from '../src/db/index.ts';
import type { Engine } from '../src/engines/engine.ts';
import { claimNextJob, type ClaimOptions } from '../src/queue/index.ts';
import { cleanup, KEY_A, KEY_B, killAndWait, openTestDb, spawnZhinian, startStack, tempDir, testEnv, waitFor, waitForJob } from './helpers.ts';

/**
 * Fair sharing between clients: queued jobs are claimed round-robin across clients (weighted),
 * FIFO within one; a client's running cap holds across workers; a flood by one client does not
 * make another's job wait behind it.
 */

const KEY_C = 'key-c-0123456789';
const KEYS = { 'client-a': KEY_A, 'client-b': KEY_B, 'client-c': KEY_C } as const;
type Client = keyof typeof KEYS;
const THREE_CLIENTS = {
  ZHINIAN_API_KEYS: Object.entries(KEYS)
    .map(([id, key]) => `${id}:${key}`)
    .join(','),
};

const PNG = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#2060c0' } })
  .png()
  .toBuffer();

/** An in-process engine; a job whose prompt starts with `slow` runs for `slowMs`. */
function sleepyEngine(slowMs = 0): Engine {
  return {
    name: 'test',
    capabilities: ['image.generate'],
    async run(req, ctx) {
      if (req.prompt?.startsWith('slow')) await sleep(slowMs, undefined, { signal: ctx.signal });
      const file = path.join(ctx.workDir, 'out.png');
      await fsp.writeFile(file, PNG);
      return [{ path: file, kind: 'image', mimeType: 'image/png' }];
    },
  };
}

/** An API server (no worker) on a fresh data dir, and a connection to its database. */
async function server(t: TestContext, env: Record<string, string> = {}) {
  const add = cleanup(t);
  const dataDir = tempDir();
  const api = add(await startStack({ dataDir, worker: false, env: { ...THREE_CLIENTS, ...env }, engines: [sleepyEngine()] }), (s) => s.stop());
  const h = add(await openTestDb(dataDir), (x) => x.close());
  return { api, h, dataDir, add };
}

async function createJobs(api: Awaited<ReturnType<typeof server>>['api'], client: Client, count: number, prompt = 'quick'): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const res = await api.api('/api/v1/jobs', {
      method: 'POST',
      key: KEYS[client],
      json: { capability: 'image.generate', prompt: `${prompt} ${client} ${i}`, width: 64, height: 64 },
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    ids.push(res.body.job.id);
  }
  return ids;
}

/** Claims until nothing is claimable; returns the claimed jobs' clients and ids in claim order. */
async function claimAll(h: DbHandle, opts: Partial<ClaimOptions> = {}): Promise<{ client: string; id: string }[]> {
  const claimed: { client: string; id: string }[] = [];
  for (;;) {
    const job = await claimNextJob(h, { workerId: 'wrk_test', now: Date.now(), leaseMs: 600_000, engines: [{ engine: 'test' }], ...opts });
    if (!job) return claimed;
    claimed.push({ client: job.clientId, id: job.id });
  }
}

async function setOverride(h: DbHandle, id: string, fields: { weight?: number; max_running?: number }) {
  const now = Date.now();
  await h.db
    .insertInto('clients')
    .values({ id, max_running: null, weight: null, rate_limit_jobs_per_minute: null, rate_limit_requests_per_minute: null, created_at: now, updated_at: now, ...fields })
    .onConflict((oc) => oc.column('id').doUpdateSet({ ...fields, updated_at: now }))
    .execute();
}

const capsOn = { defaultMaxRunning: 0, active: true };

describe('fair order', () => {
  test('queued jobs are claimed round-robin across 3 clients and FIFO within each, though each queued all of its jobs at once', async (t) => {
    const { api, h } = await server(t);
    const created = { 'client-a': await createJobs(api, 'client-a', 6), 'client-b': await createJobs(api, 'client-b', 6), 'client-c': await createJobs(api, 'client-c', 6) };
    const claimed = await claimAll(h);
    assert.equal(claimed.length, 18);
    // Every round has one job of each client.
    for (let round = 0; round < 6; round++) {
      const clients = claimed.slice(3 * round, 3 * round + 3).map((c) => c.client);
      assert.deepEqual(new Set(clients), new Set(['client-a', 'client-b', 'client-c']), `round ${round + 1}: ${clients.join(' ')}`);
    }
    for (const client of Object.keys(created) as Client[]) {
      assert.deepEqual(
        claimed.filter((c) => c.client === client).map((c) => c.id),
        created[client],
        `${client}: FIFO`,
      );
    }
  });

  test('a client with nothing queued goes right after the head of the queue, however much another client queued', async (t) => {
    const { api, h } = await server(t);
    await createJobs(api, 'client-a', 200);
    const [light] = await createJobs(api, 'client-b', 1);
    const claimed = await claimAll(h);
    assert.equal(claimed.length, 201);
    assert.ok(claimed.findIndex((c) => c.id === light) <= 1, `claimed with A's first, not after A's 200: position ${claimed.findIndex((c) => c.id === light)}`);
    // Once A's jobs run, a client that had nothing goes next, before A's queued ones.
    const more = await createJobs(api, 'client-a', 5);
    await claimNextJob(h, { workerId: 'wrk_test', now: Date.now(), leaseMs: 600_000, engines: [{ engine: 'test' }] });
    const [next] = await createJobs(api, 'client-c', 1);
    assert.equal((await claimNextJob(h, { workerId: 'wrk_test', now: Date.now(), leaseMs: 600_000, engines: [{ engine: 'test' }] }))?.id, next);
    assert.deepEqual(
      (await claimAll(h)).map((c) => c.id),
      more.slice(1),
    );
  });

  test('a client with weight 2 gets two turns for each turn of a weight-1 client', async (t) => {
    const { api, h } = await server(t);
    await setOverride(h, 'client-b', { weight: 2 });
    await createJobs(api, 'client-a', 10);
    await createJobs(api, 'client-b', 20);
    const claimed = await claimAll(h);
    // Rounds of one A job and two B jobs.
    const order = claimed.map((c) => c.client.at(-1)).join('');
    for (let round = 0; round < 10; round++) {
      assert.equal([...order.slice(3 * round, 3 * round + 3)].sort().join(''), 'abb', order);
    }
  });

  test('jobs moved to another engine keep their distance from the head of the queue', async (t) => {
    // Covered through the claim: the keys of a moved queue are shifted, not copied (fair-order.ts).
    const { api, h } = await server(t);
    await createJobs(api, 'client-a', 3);
    const before = await h.db.selectFrom('jobs').select(['id', 'fair_key']).orderBy('fair_key').execute();
    const { fairKeyShift } = await import('../src/queue/fair-order.ts');
    // An engine with nothing queued: nothing to be relative to, the keys stay.
    assert.equal(await fairKeyShift(h.db, 'test', 'other'), 0);
    await h.db.updateTable('jobs').set({ engine: 'other' }).where('id', '=', before[0]!.id).execute();
    const shift = await fairKeyShift(h.db, 'test', 'other');
    assert.equal(shift, Number(before[0]!.fair_key) - Number(before[1]!.fair_key));
  });
});

describe('fair order with remote engines', () => {
  test('under an engine cap the order stays round-robin, and a worker with two engines takes from each in turn', async (t) => {
    const { h } = await server(t);
    const { insertQueuedJob } = await import('../src/queue/index.ts');
    const { withTransaction } = await import('../src/db/index.ts');
    let n = 0;
    const queue = (clientId: string, engine: string, count: number) =>
      withTransaction(h, async (tx) => {
        for (let i = 0; i < count; i++) {
          const job = {
            clientId,
            capability: 'image.generate' as const,
            prompt: 'x',
            params: {},
            inputAssetIds: [],
            engine,
            enginePinned: true,
            webhookUrl: null,
            metadata: null,
            weight: 1,
            now: Date.now(),
          };
          await insertQueuedJob(tx, h.dialect, { ...job, id: `job_remote${String(++n).padStart(20, '0')}` });
        }
      });
    await queue('client-a', 'evolink', 10);
    await queue('client-b', 'evolink', 10);
    const capped = [{ engine: 'evolink', maxConcurrency: 4 }];
    const claimed = [];
    for (let i = 0; i < 5; i++) claimed.push(await claimNextJob(h, { workerId: 'wrk_r', now: Date.now(), leaseMs: 600_000, engines: capped }));
    assert.deepEqual(
      claimed
        .slice(0, 4)
        .map((j) => j?.clientId)
        .sort(),
      ['client-a', 'client-a', 'client-b', 'client-b'],
      'two of each within the cap of 4',
    );
    assert.equal(claimed[4], null, 'the cap holds');

    await queue('client-a', 'seedance', 5);
    await queue('client-c', 'jimeng', 5);
    const two = [
      { engine: 'seedance', maxConcurrency: 10 },
      { engine: 'jimeng', maxConcurrency: 10 },
    ];
    const engines = [];
    for (let turn = 0; turn < 6; turn++) engines.push((await claimNextJob(h, { workerId: 'wrk_r', now: Date.now(), leaseMs: 600_000, engines: two, turn }))?.engine);
    assert.deepEqual(engines, ['seedance', 'jimeng', 'seedance', 'jimeng', 'seedance', 'jimeng']);
  });
});

describe('running caps per client', () => {
  test('a capped client is passed over while its cap is full, its lapsed lease is still taken over, and the others are served past a long run of its jobs', async (t) => {
    const { api, h } = await server(t);
    await setOverride(h, 'client-a', { max_running: 1 });
    const a = await createJobs(api, 'client-a', 100);
    const b = await createJobs(api, 'client-b', 100);
    const claimed = await claimAll(h, { clientCaps: capsOn });
    // A gets one job; all of B's follow in order, even once A's 99 waiting jobs fill the head of
    // the fair order (the claim stops skipping them and asks each client for its head instead).
    assert.deepEqual(
      claimed.map((c) => c.id),
      [a[0], ...b],
    );
    // A's running job's worker dies: its lease lapses (backdated) and it is taken over, though A
    // is at its cap: the job holds the slot.
    const later = Date.now();
    await h.db
      .updateTable('jobs')
      .set({ run_at: later - 1 })
      .where('id', '=', a[0]!)
      .execute();
    const takeover = await claimNextJob(h, { workerId: 'wrk_other', now: later, leaseMs: 60_000, engines: [{ engine: 'test' }], clientCaps: capsOn });
    assert.equal(takeover?.id, a[0]);
    assert.equal(await claimNextJob(h, { workerId: 'wrk_other', now: later, leaseMs: 60_000, engines: [{ engine: 'test' }], clientCaps: capsOn }), null, 'the cap still holds');
    // Cancelling the running job frees the slot for A's next one.
    assert.equal((await api.api(`/api/v1/jobs/${a[0]}/cancel`, { method: 'POST', key: KEY_A })).status, 200);
    const next = await claimNextJob(h, { workerId: 'wrk_other', now: later, leaseMs: 60_000, engines: [{ engine: 'test' }], clientCaps: capsOn });
    assert.equal(next?.id, a[1]);
  });

  test('ZHINIAN_CLIENT_MAX_RUNNING holds across 2 worker processes; a client override of null falls back to it', async (t) => {
    const add = cleanup(t);
    const dataDir = tempDir();
    const env = { ...THREE_CLIENTS, ZHINIAN_CLIENT_MAX_RUNNING: '2', ZHINIAN_WORKER_CONCURRENCY: '3' };
    const api = add(await startStack({ dataDir, worker: false, env }), (s) => s.stop());
    const h = add(await openTestDb(dataDir), (x) => x.close());
    await setOverride(h, 'client-c', { max_running: 1 });
    const ids = [];
    for (const client of ['client-a', 'client-b', 'client-c'] as const) {
      for (let i = 0; i < 8; i++) {
        const res = await api.api('/api/v1/jobs', {
          method: 'POST',
          key: KEYS[client],
          json: { capability: 'image.generate', prompt: `cap ${client} ${i}`, width: 1536, height: 1536 },
        });
        assert.equal(res.status, 201, JSON.stringify(res.body));
        ids.push({ id: res.body.job.id as string, key: KEYS[client] });
      }
    }
    // Sample the database while two real worker processes (3 slots each) drain the queue.
    const most = new Map<string, number>();
    let mostInAll = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const rows = await h.db
          .selectFrom('jobs')
          .select(['client_id', (eb) => eb.fn.countAll<number>().as('n')])
          .where('status', '=', 'running')
          .where('lease_owner', 'is not', null)
          .groupBy('client_id')
          .execute();
        let all = 0;
        for (const r of rows) {
          most.set(r.client_id, Math.max(most.get(r.client_id) ?? 0, Number(r.n)));
          all += Number(r.n);
        }
        mostInAll = Math.max(mostInAll, all);
        await sleep(10);
      }
    })();
    const workerEnv = testEnv(dataDir, { ...env, LOG_LEVEL: 'info' });
    for (let i = 0; i < 2; i++) {
      const child = spawnZhinian('worker', workerEnv);
      add(child, (c) => killAndWait(c, 'SIGTERM'));
    }
    for (const { id, key } of ids) {
      const job = await waitForJob(api, id, undefined, 180_000, key);
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    }
    sampling = false;
    await sampler;
    assert.ok((most.get('client-a') ?? 0) <= 2 && (most.get('client-b') ?? 0) <= 2, `env cap 2: ${JSON.stringify([...most])}`);
    assert.ok((most.get('client-c') ?? 0) <= 1, `override 1: ${JSON.stringify([...most])}`);
    assert.ok(mostInAll >= 3, `the workers had slots to spare (at most ${mostInAll} running at once)`);

    // The override reset to null: client C falls back to the env default of 2.
    await h.db.updateTable('clients').set({ max_running: null, updated_at: Date.now() }).where('id', '=', 'client-c').execute();
    const { createClientDirectory } = await import('../src/clients/index.ts');
    const directory = createClientDirectory(h, { maxRunning: 2, rateLimitJobsPerMinute: 0, rateLimitRequestsPerMinute: 0 });
    assert.equal((await directory.settingsOf('client-c')).maxRunning, 2);
  });
});

describe('no starvation', () => {
  for (const cap of [0, 1]) {
    test(`with 12 long jobs of client A queued on 2 worker slots, client B's small job starts within 5 s${cap ? ` (A capped at ${cap})` : ''}`, async (t) => {
      const add = cleanup(t);
      const SLOW_MS = 2_500;
      const env = { ZHINIAN_WORKER_CONCURRENCY: '2', ...(cap ? { ZHINIAN_CLIENT_MAX_RUNNING: String(cap) } : {}) };
      const stack = add(await startStack({ env, engines: [sleepyEngine(SLOW_MS)] }), (s) => s.stop());
      const heavy: string[] = [];
      for (let i = 0; i < 12; i++) {
        const res = await stack.api('/api/v1/jobs', { method: 'POST', key: KEY_A, json: { capability: 'image.generate', prompt: `slow ${i}`, width: 64, height: 64 } });
        heavy.push(res.body.job.id);
      }
      await waitFor(async () => (await stack.api(`/api/v1/jobs/${heavy[0]}`)).body.job.status === 'running', { what: "A's first job to start" });
      const res = await stack.api('/api/v1/jobs', { method: 'POST', key: KEY_B, json: { capability: 'image.generate', prompt: 'quick', width: 64, height: 64 } });
      const created = Date.parse(res.body.job.createdAt);
      const done = await waitForJob(stack, res.body.job.id, undefined, 60_000, KEY_B);
      const waited = Date.parse(done.startedAt) - created;
      // FIFO would make it wait for all 12 (6 rounds of 2.5 s): 15 s.
      assert.ok(waited < 5_000, `B's job started ${waited} ms after it was created`);
      // And A's jobs all finish: nobody starves.
      for (const id of heavy) assert.equal((await waitForJob(stack, id, undefined, 120_000)).status, 'succeeded');
    });
  }
});
