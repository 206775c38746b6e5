// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fsp from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { Worker } from 'node:worker_threads';
import type { KyselyPlugin } from 'kysely';
import sharp from 'sharp';
import { migrateToLatest, type DbHandle, type WebhookDeliveriesTable } from '../src/db/index.ts';
import { EngineError, type Engine } from '../src/engines/engine.ts';
import { attemptDelivery, claimDueDelivery, DEFAULT_DELIVERY_LEASE_MS, enqueueWebhook, MAX_DELIVERY_ATTEMPTS, type DeliveryOptions } from '../src/webhooks/index.ts';
import { cleanup, type ReceivedHook, type Stack, startReceiver, startStack, tempDir, waitFor, waitForJob, WEBHOOK_SECRET, openTestDb } from './helpers.ts';
import { freshDelivery, rawServer } from './webhook-helpers.ts';

/** Webhook delivery: retries with growing, jittered delays, stable ids and bytes, stored state. */

const PNG = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#2080c0' } })
  .png()
  .toBuffer();
const TERMINAL = ['succeeded', 'failed', 'expired', 'cancelled'];

/** Succeeds at once, fails for the prompt "fail", and waits for its signal for the prompt "block". */
const engine: Engine = {
  name: 'test',
  capabilities: ['image.generate'],
  async run(req, ctx) {
    if (req.prompt === 'fail') throw new EngineError('content_moderation', 'Rejected by the provider.');
    if (req.prompt === 'block') await new Promise((r) => ctx.signal.addEventListener('abort', r, { once: true }));
    const file = path.join(ctx.workDir, 'out.png');
    await fsp.writeFile(file, PNG);
    return [{ path: file, kind: 'image', mimeType: 'image/png' }];
  },
};

const sign = (raw: string) => 'sha256=' + createHmac('sha256', WEBHOOK_SECRET).update(raw).digest('hex');

async function createJob(stack: Stack, extra: Record<string, unknown>): Promise<any> {
  const res = await stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'ok', width: 64, height: 64, ...extra } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.job;
}

async function deliveryOf(h: DbHandle, jobId: string): Promise<WebhookDeliveriesTable | undefined> {
  return h.db.selectFrom('webhook_deliveries').selectAll().where('job_id', '=', jobId).executeTakeFirst();
}

/** Waits until attempt number `attempts` of the job's delivery has been recorded. */
function recordedAttempt(h: DbHandle, jobId: string, attempts: number) {
  return waitFor(
    async () => {
      const row = await deliveryOf(h, jobId);
      return row && row.attempts === attempts && row.lease_owner === null ? row : null;
    },
    { timeoutMs: 10_000, what: `attempt ${attempts} to be recorded` },
  );
}

/** Makes a pending retry due now instead of waiting seconds for it. */
async function makeDue(h: DbHandle, deliveryId: string, attempts: number): Promise<void> {
  const res = await h.db
    .updateTable('webhook_deliveries')
    .set({ next_attempt_at: Date.now() - 1 })
    .where('id', '=', deliveryId)
    .where('attempts', '=', attempts)
    .where('status', '=', 'pending')
    .where('lease_owner', 'is', null)
    .executeTakeFirst();
  assert.equal(Number(res.numUpdatedRows), 1);
}

async function attemptsOf(h: DbHandle, deliveryId: string) {
  return h.db.selectFrom('webhook_attempts').selectAll().where('delivery_id', '=', deliveryId).orderBy('attempt').execute();
}

function assertSameDelivery(hooks: ReceivedHook[], deliveryId: string) {
  for (const hook of hooks) {
    assert.equal(hook.headers['x-zhinian-delivery'], deliveryId);
    assert.equal(hook.raw, hooks[0].raw, 'identical raw body on every attempt');
    assert.equal(hook.headers['x-zhinian-signature'], sign(hook.raw));
    assert.equal(hook.headers['x-zhinian-event'], hooks[0].headers['x-zhinian-event']);
    assert.match(String(hook.headers['content-type']), /^application\/json/);
  }
}

describe('webhook retries', () => {
  test('a failing receiver is retried after ~5 s then ~30 s, with one delivery id and identical signed bytes', async (t) => {
    const add = cleanup(t);
    const receiver = add(await startReceiver((_hook, i) => (i < 2 ? 500 : 200)), (r) => r.close());
    const stack = add(await startStack({ engines: [engine] }), (s) => s.stop());
    const h = add(await openTestDb(stack.dataDir), (x) => x.close());
    const job = await createJob(stack, { webhookUrl: receiver.url });
    await waitForJob(stack, job.id);

    const first = await recordedAttempt(h, job.id, 1);
    const observedAt = Date.now();
    assert.equal(first.status, 'pending');
    assert.equal(first.last_status_code, 500);
    assert.ok(first.last_error);
    const [a1] = await attemptsOf(h, first.id);
    const delay1 = Number(first.next_attempt_at) - (Number(a1.started_at) + a1.duration_ms);
    assert.ok(delay1 >= 4_000 && delay1 <= 6_000, `first retry after ${delay1} ms, not 5 s ± 20%`);
    const dueIn = Number(first.next_attempt_at) - observedAt;
    assert.ok(dueIn > 0 && dueIn <= 6_000, `next attempt due in ${dueIn} ms, not about 5 s from now`);
    assert.equal(receiver.hooks.length, 1, 'no early retry');

    await makeDue(h, first.id, 1);
    const second = await recordedAttempt(h, job.id, 2);
    assert.equal(second.status, 'pending');
    const [, a2] = await attemptsOf(h, first.id);
    const delay2 = Number(second.next_attempt_at) - (Number(a2.started_at) + a2.duration_ms);
    assert.ok(delay2 >= 24_000 && delay2 <= 36_000, `second retry after ${delay2} ms, not 30 s ± 20%`);
    assert.ok(delay2 > delay1);

    await makeDue(h, first.id, 2);
    const third = await recordedAttempt(h, job.id, 3);
    assert.equal(third.status, 'delivered');
    assert.equal(third.last_status_code, 200);
    assert.equal(third.last_error, null);
    assert.equal(third.next_attempt_at, null);
    assert.ok(Number(third.delivered_at) > 0);

    const tries = await attemptsOf(h, first.id);
    assert.deepEqual(
      tries.map((a) => [a.attempt, a.status_code]),
      [
        [1, 500],
        [2, 500],
        [3, 200],
      ],
    );
    assert.ok(tries[0].error && tries[1].error && tries[2].error === null);
    assert.ok(tries.every((a) => a.duration_ms >= 0 && Number(a.started_at) > 0));

    const hooks = receiver.hooks.filter((x) => x.body.job.id === job.id);
    assert.equal(hooks.length, 3);
    assertSameDelivery(hooks, first.id);
    assert.equal(hooks[0].body.event, 'generation.succeeded');
    assert.equal(hooks[0].headers['x-zhinian-event'], 'generation.succeeded');
    const current = (await stack.api(`/api/v1/jobs/${job.id}`)).body.job;
    assert.deepEqual(hooks[0].body.job, current, 'the body carries the job as the API shows it');
    assert.equal(hooks[0].body.clientId, 'client-a', 'and the client it belongs to');
  });

  test('a pending retry survives a restart and is sent by the next process under the same id', async (t) => {
    const add = cleanup(t);
    const receiver = add(await startReceiver((_hook, i) => (i === 0 ? 503 : 200)), (r) => r.close());
    const stack = await startStack({ engines: [engine] });
    const stopped = { done: false };
    add(stack, async (s) => (stopped.done ? undefined : s.stop()));
    const h = add(await openTestDb(stack.dataDir), (x) => x.close());
    const job = await createJob(stack, { webhookUrl: receiver.url });
    const first = await recordedAttempt(h, job.id, 1);
    await stack.stop();
    stopped.done = true;

    await makeDue(h, first.id, 1);
    add(await startStack({ dataDir: stack.dataDir, server: false, engines: [engine] }), (s) => s.stop());
    const row = await recordedAttempt(h, job.id, 2);
    assert.equal(row.status, 'delivered');
    const hooks = receiver.hooks.filter((x) => x.body.job.id === job.id);
    assert.equal(hooks.length, 2);
    assertSameDelivery(hooks, first.id);
  });

  test('with two dispatchers on one database every event is sent exactly once', async (t) => {
    const add = cleanup(t);
    const receiver = add(await startReceiver(), (r) => r.close());
    const dataDir = tempDir();
    const api = add(await startStack({ dataDir, worker: false, engines: [engine] }), (s) => s.stop());
    const h = add(await openTestDb(dataDir), (x) => x.close());
    const jobs = await Promise.all(Array.from({ length: 30 }, () => createJob(api, { webhookUrl: receiver.url })));
    await Promise.all([0, 1].map(async () => add(await startStack({ dataDir, server: false, engines: [engine] }), (s) => s.stop())));
    await waitFor(
      async () => {
        const rows = await h.db.selectFrom('webhook_deliveries').select('status').execute();
        return rows.length === 30 && rows.every((r) => r.status === 'delivered');
      },
      { timeoutMs: 20_000, what: '30 deliveries' },
    );
    const perJob = new Map<string, number>();
    for (const hook of receiver.hooks) perJob.set(hook.body.job.id, (perJob.get(hook.body.job.id) ?? 0) + 1);
    assert.equal(perJob.size, 30);
    assert.deepEqual(
      [...perJob].filter(([, n]) => n !== 1),
      [],
    );
    assert.deepEqual([...perJob.keys()].sort(), jobs.map((j) => j.id).sort());
    const tries = await h.db.selectFrom('webhook_attempts').select('attempt').execute();
    assert.equal(tries.length, 30);
  });
});

describe('one delivery attempt', () => {
  test('a receiver that never answers counts as a failed attempt after the timeout', async (t) => {
    const url = await rawServer(t, () => {
      // hold the request open, never answer
    });
    const { handle, opts, claimed } = await freshDelivery(t, url, { timeoutMs: 300 });
    const startedAt = Date.now();
    const outcome = await attemptDelivery(opts, claimed);
    const took = Date.now() - startedAt;
    assert.equal(outcome, 'retry');
    assert.ok(took >= 280 && took < 3_000, `attempt took ${took} ms with a 300 ms timeout`);
    const [attempt] = await attemptsOf(handle, claimed.id);
    assert.equal(attempt.attempt, 1);
    assert.equal(attempt.status_code, null);
    assert.ok(attempt.error);
    const row = (await handle.db.selectFrom('webhook_deliveries').selectAll().executeTakeFirstOrThrow())!;
    assert.equal(row.status, 'pending');
    assert.equal(row.lease_owner, null);
    assert.ok(row.last_error);
    const delay = Number(row.next_attempt_at) - (Number(attempt.started_at) + attempt.duration_ms);
    assert.ok(delay >= 4_000 && delay <= 6_000, `retry after ${delay} ms`);
  });

  test('a receiver that answers 2xx but never finishes its body does not hold the sender past the timeout', async (t) => {
    const url = await rawServer(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('partial');
    });
    const { handle, opts, claimed } = await freshDelivery(t, url, { timeoutMs: 300 });
    const startedAt = Date.now();
    await attemptDelivery(opts, claimed);
    assert.ok(Date.now() - startedAt < 3_000, 'the timeout covers the whole answer');
    const [attempt] = await attemptsOf(handle, claimed.id);
    assert.equal(attempt.status_code, 200);
    const row = await handle.db.selectFrom('webhook_deliveries').selectAll().executeTakeFirstOrThrow();
    assert.equal(row.lease_owner, null, 'the claim is released');
  });

  test('a refused connection is a failed attempt, not a crash', async (t) => {
    const server = http.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((r) => server.close(() => r()));
    const { handle, opts, claimed } = await freshDelivery(t, `http://127.0.0.1:${port}/hook`);
    assert.equal(await attemptDelivery(opts, claimed), 'retry');
    const [attempt] = await attemptsOf(handle, claimed.id);
    assert.equal(attempt.status_code, null);
    assert.match(String(attempt.error), /ECONNREFUSED|refused/i);
  });

  test('only 2xx answers count as delivered', async (t) => {
    for (const [status, expected] of [
      [200, 'delivered'],
      [204, 'delivered'],
      [302, 'retry'],
      [400, 'retry'],
      [410, 'failed'],
      [429, 'retry'],
      [500, 'retry'],
    ] as const) {
      const url = await rawServer(t, (_req, res) => {
        res.statusCode = status;
        res.setHeader('location', 'http://127.0.0.1:1/elsewhere');
        res.end();
      });
      const { handle, opts, claimed } = await freshDelivery(t, url);
      assert.equal(await attemptDelivery(opts, claimed), expected, `HTTP ${status}`);
      const row = await handle.db.selectFrom('webhook_deliveries').selectAll().executeTakeFirstOrThrow();
      assert.equal(row.last_status_code, status);
      assert.equal(row.status, expected === 'retry' ? 'pending' : expected);
    }
  });

  test('the last attempt that fails marks the delivery failed, with no further retry', async (t) => {
    const url = await rawServer(t, (_req, res) => {
      res.statusCode = 500;
      res.end();
    });
    const { handle, opts, claimed } = await freshDelivery(t, url, { attemptsSoFar: MAX_DELIVERY_ATTEMPTS - 1 });
    assert.equal(claimed.attempts, MAX_DELIVERY_ATTEMPTS);
    assert.equal(await attemptDelivery(opts, claimed), 'failed');
    const row = await handle.db.selectFrom('webhook_deliveries').selectAll().executeTakeFirstOrThrow();
    assert.equal(row.status, 'failed');
    assert.equal(row.next_attempt_at, null);
    assert.equal(await claimDueDelivery(opts), null, 'nothing left to send');
  });

  test('a delivery another sender holds is not claimed twice', async (t) => {
    const url = await rawServer(t, (_req, res) => res.end());
    const { opts } = await freshDelivery(t, url);
    assert.equal(await claimDueDelivery({ ...opts, owner: 'wrk_other' }), null);
  });
});

describe('webhook headers and events', () => {
  test('without a webhook secret no signature header is sent', async (t) => {
    const add = cleanup(t);
    const receiver = add(await startReceiver(), (r) => r.close());
    const stack = add(await startStack({ engines: [engine], env: { ZHINIAN_WEBHOOK_SECRET: '' } }), (s) => s.stop());
    const job = await createJob(stack, { webhookUrl: receiver.url });
    const hook = await waitFor(() => receiver.hooks.find((x) => x.body.job.id === job.id), { what: 'webhook' });
    assert.equal(hook.headers['x-zhinian-signature'], undefined);
    assert.match(String(hook.headers['x-zhinian-delivery']), /^whd_/);
    assert.equal(hook.headers['x-zhinian-event'], 'generation.succeeded');
  });

  test('every terminal status sends its own event, named in the body and in X-Zhinian-Event', async (t) => {
    const add = cleanup(t);
    const receiver = add(await startReceiver(), (r) => r.close());
    const dataDir = tempDir();
    const env = { ZHINIAN_QUEUE_TTL_SECONDS: '60' };
    const api = add(await startStack({ dataDir, worker: false, engines: [engine], env }), (s) => s.stop());
    const h = add(await openTestDb(dataDir), (x) => x.close());

    // Queued jobs, settled before any worker exists: cancelled, and past its queue TTL.
    const cancelled = await createJob(api, { webhookUrl: receiver.url });
    assert.equal((await api.api(`/api/v1/jobs/${cancelled.id}/cancel`, { method: 'POST' })).status, 200);
    const expired = await createJob(api, { webhookUrl: receiver.url });
    await h.db
      .updateTable('jobs')
      .set((eb) => ({ created_at_us: eb('created_at_us', '-', 3_600_000_000), run_at: eb('run_at', '-', 3_600_000) }))
      .where('id', '=', expired.id)
      .execute();
    const succeeded = await createJob(api, { webhookUrl: receiver.url });
    const failed = await createJob(api, { prompt: 'fail', webhookUrl: receiver.url });
    const running = await createJob(api, { prompt: 'block', webhookUrl: receiver.url });

    add(await startStack({ dataDir, server: false, engines: [engine], env }), (s) => s.stop());
    await waitForJob(api, running.id, ['running']);
    assert.equal((await api.api(`/api/v1/jobs/${running.id}/cancel`, { method: 'POST' })).status, 200);

    const expected: [any, string][] = [
      [cancelled, 'cancelled'],
      [expired, 'expired'],
      [succeeded, 'succeeded'],
      [failed, 'failed'],
      [running, 'cancelled'],
    ];
    for (const [job, status] of expected) {
      const hook = await waitFor(() => receiver.hooks.find((x) => x.body.job.id === job.id), { what: `${status} webhook` });
      assert.equal(hook.body.event, `generation.${status}`);
      assert.equal(hook.headers['x-zhinian-event'], `generation.${status}`);
      assert.equal(hook.body.job.status, status);
      assert.ok(TERMINAL.includes(hook.body.job.status));
      assert.ok(hook.body.job.finishedAt);
      assert.equal(hook.headers['x-zhinian-signature'], sign(hook.raw));
      assert.deepEqual(Object.keys(hook.body).sort(), ['clientId', 'event', 'job']);
    }
    const events = await h.db.selectFrom('webhook_deliveries').select(['job_id', 'event']).execute();
    assert.equal(events.length, expected.length, 'one delivery per event');
  });
});

describe('webhook claims are leases: a live sender keeps its delivery until its outcome is recorded', () => {
  /** A delivery on a fresh database and a clock the test moves (senders' time, not the timers'). */
  async function leased(t: TestContext, url: string) {
    const add = cleanup(t);
    const handle = add(await openTestDb(tempDir()), (h) => h.close());
    await migrateToLatest(handle);
    const clock = { at: Date.now(), now: () => clock.at };
    await enqueueWebhook(handle.db, { jobId: 'job_lease', clientId: 'client-a', url, event: 'generation.succeeded', job: { id: 'job_lease', status: 'succeeded' }, now: clock.at });
    const sender = (owner: string, extra: Partial<DeliveryOptions> = {}): DeliveryOptions => ({
      handle,
      clock,
      owner,
      secret: WEBHOOK_SECRET,
      allowPrivateUrls: true,
      timeoutMs: 5_000,
      heartbeatMs: 20,
      ...extra,
    });
    const row = () => handle.db.selectFrom('webhook_deliveries').selectAll().executeTakeFirstOrThrow();
    return { handle, clock, sender, row };
  }

  /** A receiver that holds each request until the test lets it answer. */
  async function heldReceiver(t: TestContext) {
    const received: http.IncomingHttpHeaders[] = [];
    const waiting: (() => void)[] = [];
    const url = await rawServer(t, (req, res) => {
      req.resume();
      req.on('end', () => {
        received.push(req.headers);
        waiting.push(() => res.end('ok'));
      });
    });
    return { url, received, answerAll: () => waiting.splice(0).forEach((answer) => answer()) };
  }

  test('a sender still waiting for its answer 50 s (of its clock) after the claim keeps it: no second sender sends the event meanwhile', async (t) => {
    // Before: a claim ran out 15 s after it was taken (10 s time limit + 5 s margin) whatever its
    // sender was doing, so a slow attempt or a slow record was sent again by another live process.
    const receiver = await heldReceiver(t);
    const { clock, sender, row } = await leased(t, receiver.url);
    const a = sender('wrk_a');
    const claimed = await claimDueDelivery(a);
    assert.ok(claimed);
    const attempt = attemptDelivery(a, claimed);
    await waitFor(() => receiver.received.length === 1, { timeoutMs: 30_000, what: 'the request to reach the receiver' });

    for (let step = 1; step <= 10; step++) {
      clock.at += 5_000;
      assert.equal(await claimDueDelivery(sender('wrk_b')), null, `${step * 5} s after the claim a second sender took the delivery while its sender was alive`);
      // Wait for the next renewal (every 20 ms of real time) before moving the clock again.
      await waitFor(async () => Number((await row()).next_attempt_at) >= clock.at + DEFAULT_DELIVERY_LEASE_MS, { timeoutMs: 2_000, what: 'a renewal' }).catch(() => {});
    }
    receiver.answerAll();
    assert.equal(await attempt, 'delivered');
    const settled = await row();
    assert.equal(settled.status, 'delivered');
    assert.equal(settled.lease_owner, null);
    assert.equal(settled.attempts, 1);
    clock.at += 3_600_000;
    assert.equal(await claimDueDelivery(sender('wrk_b')), null, 'nothing left to send');
    assert.equal(receiver.received.length, 1, 'the receiver got the event once');
  });

  test('when recording the answer fails (a database error), the record is retried and the event is not sent again', async (t) => {
    // Before: the failed write was thrown away; the 200 was lost and the event sent again once
    // the claim ran out.
    const received: string[] = [];
    const url = await rawServer(t, (req, res) => {
      received.push(String(req.headers['x-zhinian-delivery']));
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    const { handle, clock, sender, row } = await leased(t, url);
    let failuresLeft = 2;
    const flaky: KyselyPlugin = {
      transformQuery(args) {
        // The record's update (the only one that sets last_status_code) fails twice.
        if (args.node.kind === 'UpdateQueryNode' && JSON.stringify(args.node).includes('"last_status_code"') && failuresLeft-- > 0) {
          throw new Error('Connection terminated unexpectedly');
        }
        return args.node;
      },
      transformResult: async (args) => args.result,
    };
    const a = sender('wrk_a', { handle: { ...handle, db: handle.db.withPlugin(flaky) } });
    const claimed = await claimDueDelivery(a);
    assert.ok(claimed);
    assert.equal(await attemptDelivery(a, claimed), 'delivered', 'the answer was recorded despite two failed writes');
    assert.equal(failuresLeft, -1, 'the record did fail twice first');
    const settled = await row();
    assert.equal(settled.status, 'delivered');
    assert.equal(settled.last_status_code, 200);
    const tries = await attemptsOf(handle, claimed.id);
    assert.deepEqual(
      tries.map((x) => [x.attempt, x.status_code]),
      [[1, 200]],
    );
    clock.at += 3_600_000;
    assert.equal(await claimDueDelivery(sender('wrk_b')), null, 'nothing left to send');
    assert.deepEqual(received, [claimed.id], 'sent once');
  });

  test('a sender that dies loses its claim after the lease: another sends the same X-Zhinian-Delivery, and the dead claim can never record', async (t) => {
    const received: string[] = [];
    const url = await rawServer(t, (req, res) => {
      received.push(String(req.headers['x-zhinian-delivery']));
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    const { handle, clock, sender, row } = await leased(t, url);
    const dead = await claimDueDelivery(sender('wrk_dead'));
    assert.ok(dead);
    // wrk_dead never renews: its claim holds for one lease, then lapses.
    clock.at += DEFAULT_DELIVERY_LEASE_MS - 1;
    assert.equal(await claimDueDelivery(sender('wrk_b')), null, 'the claim holds for its lease');
    clock.at += 2;
    const taken = await claimDueDelivery(sender('wrk_b'));
    assert.ok(taken, 'taken over once the lease lapsed');
    assert.equal(taken.attempts, 2);
    assert.equal(await attemptDelivery(sender('wrk_b'), taken), 'delivered');

    // Had wrk_dead only stalled, its late attempt would send (at least once) but not record.
    assert.equal(await attemptDelivery(sender('wrk_dead'), dead), 'lost');
    assert.deepEqual(received, [dead.id, dead.id], 'the same delivery id on every send');
    const tries = await attemptsOf(handle, dead.id);
    assert.deepEqual(
      tries.map((x) => [x.attempt, x.status_code]),
      [[2, 200]],
      'only the claim that held the delivery recorded',
    );
    const settled = await row();
    assert.equal(settled.status, 'delivered');
    assert.equal(settled.attempts, 2);
  });

  test('an answer that came within the time limit counts even when the sender was busy as the limit passed', async (t) => {
    // The receiver runs on its own thread and answers 50 ms after the request; this thread is
    // blocked (as a busy process is) until long after the 300 ms limit. Timers run before I/O:
    // before, the limit fired first and the answer that had arrived in time was recorded as
    // "no answer", and sent again later.
    const receiver = new Worker(
      `const http = require('node:http');
       const { parentPort } = require('node:worker_threads');
       const server = http.createServer((req, res) => {
         req.resume();
         req.on('end', () => { parentPort.postMessage('received'); setTimeout(() => res.end('ok'), 50); });
       });
       server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));`,
      { eval: true },
    );
    cleanup(t)(receiver, (w) => w.terminate());
    const port = await new Promise<number>((resolve) => receiver.once('message', resolve));
    const { handle, sender } = await leased(t, `http://127.0.0.1:${port}/hook`);
    // A limit of 1 s, passed while the sender is busy until 2 s: the answer came 50 ms after the request.
    const a = sender('wrk_a', { timeoutMs: 1_000 });
    const claimed = await claimDueDelivery(a);
    assert.ok(claimed);
    const startedAt = Date.now();
    const attempt = attemptDelivery(a, claimed);
    await new Promise<void>((resolve) =>
      receiver.once('message', () =>
        setImmediate(() => {
          while (Date.now() - startedAt < 2_000); // busy: no I/O, no timers
          resolve();
        }),
      ),
    );
    assert.equal(await attempt, 'delivered');
    const [recorded] = await attemptsOf(handle, claimed.id);
    assert.equal(recorded.status_code, 200);
    assert.equal(recorded.error, null);
  });
});
