// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type DbHandle, migrateToLatest } from '../src/db/index.ts';
import { claimNextJob } from '../src/queue/index.ts';
import { FAIR_STRIDE, fairKeysResume } from '../src/queue/fair-order.ts';
import { enqueueWebhook } from '../src/webhooks/index.ts';
import { transact } from '../src/queue/changes.ts';
import { claimJob, cleanup, KEY_A, KEY_B, openTestDb, queuedJobRow, startReceiver, startStack, tempDir, waitFor, waitForJob } from './helpers.ts';

/**
 * Disabling a client stops its work: its queued jobs wait (not cancelled) and its webhooks are
 * held (not attempted, no try spent), both resumed when it is enabled again. The console's
 * switch is the `clients.disabled` flag, set here as the console's PATCH sets it.
 */

async function setDisabled(handle: DbHandle, clientId: string, disabled: boolean): Promise<void> {
  const now = Date.now();
  await handle.db
    .insertInto('clients')
    .values({
      id: clientId,
      max_running: null,
      weight: null,
      rate_limit_jobs_per_minute: null,
      rate_limit_requests_per_minute: null,
      created_at: now,
      updated_at: now,
      name: null,
      disabled: disabled ? 1 : 0,
      allowed_engines: null,
      webhook_secret: null,
      webhook_secret_previous: null,
      webhook_secret_previous_until: null,
    })
    .onConflict((oc) => oc.column('id').doUpdateSet({ disabled: disabled ? 1 : 0, updated_at: now }))
    .execute();
}

const job = (handle: DbHandle, id: string) => handle.db.selectFrom('jobs').select(['status', 'attempts', 'lease_owner']).where('id', '=', id).executeTakeFirstOrThrow();
const delivery = (handle: DbHandle, id: string) =>
  handle.db.selectFrom('webhook_deliveries').select(['status', 'attempts', 'held_due_at']).where('id', '=', id).executeTakeFirstOrThrow();

describe('a disabled client', () => {
  test("its queued job is not claimed while another client's jobs run, and runs once it is enabled again", async (t) => {
    const add = cleanup(t);
    const dataDir = tempDir();
    // The API alone first: the jobs are queued with no worker to take them.
    const api = add(await startStack({ dataDir, worker: false }), (s) => s.stop());
    const handle = add(await openTestDb(dataDir), (h) => h.close());
    const create = async (key: string) => {
      const res = await api.api('/api/v1/jobs', { method: 'POST', key, json: { capability: 'image.generate', prompt: 'ok', width: 64, height: 64 } });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body.job.id as string;
    };
    const jobA = await create(KEY_A); // first in the fair order
    const jobB1 = await create(KEY_B);
    await setDisabled(handle, 'client-a', true);

    add(await startStack({ dataDir, server: false }), (s) => s.stop());
    assert.equal((await waitForJob(api, jobB1, undefined, 60_000, KEY_B)).status, 'succeeded');
    const jobB2 = await create(KEY_B);
    assert.equal((await waitForJob(api, jobB2, undefined, 60_000, KEY_B)).status, 'succeeded');
    assert.deepEqual(await job(handle, jobA), { status: 'queued', attempts: 0, lease_owner: null }, "A's job waits, untouched");

    await setDisabled(handle, 'client-a', false);
    await waitFor(async () => (await job(handle, jobA)).status === 'succeeded', { timeoutMs: 60_000, what: "A's job once A is enabled" });
    assert.equal(Number((await job(handle, jobA)).attempts), 1);
  });

  test("its webhook is held, untried, while another client's are delivered, and is sent under the same delivery id once it is enabled", async (t) => {
    const add = cleanup(t);
    const receiver = add(await startReceiver(), (r) => r.close());
    const stack = add(await startStack(), (s) => s.stop());
    const handle = add(await openTestDb(stack.dataDir), (h) => h.close());
    await setDisabled(handle, 'client-a', true);
    let seq = 0;
    const enqueue = async (clientId: string) => {
      const jobId = `job_disabled_${++seq}`;
      await enqueueWebhook(handle.db, { jobId, clientId, url: receiver.url, event: 'generation.succeeded', job: { id: jobId }, now: Date.now() });
      return (await handle.db.selectFrom('webhook_deliveries').select('id').where('job_id', '=', jobId).executeTakeFirstOrThrow()).id;
    };
    const received = (id: string) => receiver.hooks.find((h) => h.headers['x-zhinian-delivery'] === id);

    const idA = await enqueue('client-a'); // due now, before B's
    for (let i = 0; i < 2; i++) {
      const idB = await enqueue('client-b');
      await waitFor(() => received(idB), { timeoutMs: 30_000, what: `B's webhook ${i + 1}` });
    }
    assert.equal(received(idA), undefined, "A's webhook was not sent");
    assert.deepEqual(await delivery(handle, idA), { status: 'pending', attempts: 0, held_due_at: null }, 'held as it was: no try spent, not failed');
    assert.equal((await handle.db.selectFrom('webhook_attempts').select('attempt').where('delivery_id', '=', idA).execute()).length, 0);

    await setDisabled(handle, 'client-a', false);
    const hook = await waitFor(() => received(idA), { timeoutMs: 30_000, what: "A's webhook once A is enabled" });
    assert.equal(hook.body.clientId, 'client-a');
    await waitFor(async () => (await delivery(handle, idA)).status === 'delivered', { what: "A's delivery recorded" });
    assert.equal(Number((await delivery(handle, idA)).attempts), 1, 'its first try');
    assert.equal(receiver.hooks.filter((h) => h.headers['x-zhinian-delivery'] === idA).length, 1);
  });

  test("a disabled client's backlog at the head of the fair order does not hide other clients' jobs from the claim", async (t) => {
    const add = cleanup(t);
    const handle = add(await openTestDb(tempDir()), (h) => h.close());
    await migrateToLatest(handle);
    const nowUs = Date.now() * 1000;
    const rows = Array.from({ length: 200 }, (_, i) =>
      queuedJobRow({ id: `job_a_${String(i).padStart(3, '0')}`, engine: 'local', created_at_us: nowUs + i, run_at: 0, fair_key: i }),
    );
    rows.push(queuedJobRow({ id: 'job_b', engine: 'local', client_id: 'client-b', created_at_us: nowUs + 500, run_at: 0, fair_key: 1_000 }));
    for (let i = 0; i < rows.length; i += 100)
      await handle.db
        .insertInto('jobs')
        .values(rows.slice(i, i + 100))
        .execute();
    await setDisabled(handle, 'client-a', true);
    const claim = (workerId: string) => claimNextJob(handle, { workerId, now: Date.now(), leaseMs: 60_000, engines: [{ engine: 'local' }] });
    assert.equal((await claim('wrk_1'))?.id, 'job_b', "B's job, behind A's 200");
    assert.equal(await claim('wrk_2'), null, 'nothing else: A waits');
    await setDisabled(handle, 'client-a', false);
    assert.equal((await claim('wrk_3'))?.id, 'job_a_000', "A's first job once A is enabled");
  });

  test('enabled again, its backlog takes turns with other clients instead of going ahead of all of them (fairKeysResume)', async (t) => {
    const add = cleanup(t);
    const handle = add(await openTestDb(tempDir()), (h) => h.close());
    await migrateToLatest(handle);
    const nowUs = Date.now() * 1000;
    const S = FAIR_STRIDE;
    // A queued 3 jobs, then was disabled; B went on: one running (V = 10 S), 3 queued behind it.
    const rows = [
      ...[0, 1, 2].map((i) => queuedJobRow({ id: `job_a_${i}`, engine: 'local', created_at_us: nowUs + i, run_at: 0, fair_key: i * S })),
      queuedJobRow({ id: 'job_b_run', engine: 'local', client_id: 'client-b', created_at_us: nowUs + 10, run_at: 0, fair_key: 10 * S }),
      ...[1, 2, 3].map((i) => queuedJobRow({ id: `job_b_${i}`, engine: 'local', client_id: 'client-b', created_at_us: nowUs + 10 + i, run_at: 0, fair_key: (10 + i) * S })),
    ];
    await handle.db.insertInto('jobs').values(rows).execute();
    await transact(handle, null, (step) => claimJob(step, 'job_b_run', { workerId: 'wrk_x' }));
    await fairKeysResume({ tx: handle.db, dialect: handle.dialect, log: [] }, 'client-a');
    const claimed: string[] = [];
    for (let i = 0; i < 4; i++) claimed.push((await claimNextJob(handle, { workerId: `wrk_${i}`, now: Date.now(), leaseMs: 60_000, engines: [{ engine: 'local' }] }))!.id);
    // A's first goes next (its key is V), then A and B take turns (equal keys: either first).
    assert.equal(claimed[0], 'job_a_0');
    assert.deepEqual(claimed.slice(1, 3).sort(), ['job_a_1', 'job_b_1']);
    assert.ok(
      claimed.slice(3).every((id) => id === 'job_a_2' || id === 'job_b_2'),
      `turns: ${claimed.join(', ')}`,
    );
  });
});
