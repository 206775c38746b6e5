// @backends sqlite,postgres
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Kysely, type KyselyPlugin, Migrator, type RootOperationNode, sql } from 'kysely';
import pino from 'pino';
import { migrateToLatest, type DbHandle } from '../src/db/index.ts';
import * as m0001 from '../src/db/migrations/0001-initial.ts';
import * as m0002 from '../src/db/migrations/0002-engine-routing.ts';
import * as m0003 from '../src/db/migrations/0003-rate-limits.ts';
import * as m0004 from '../src/db/migrations/0004-fair-sharing.ts';
import { systemClock } from '../src/lib/clock.ts';
import { createNotifier } from '../src/lib/notifier.ts';
import { attemptDelivery, claimDueDelivery, type DeliveryOptions, enqueueWebhook, originOf, startWebhookDispatcher } from '../src/webhooks/index.ts';
import { createCluster } from './cluster.ts';
import { callApi, cleanup, KEY_B, openTestDb, startReceiver, TEST_BACKEND, tempDir, testEnv, waitFor, waitForJob, WEBHOOK_SECRET } from './helpers.ts';

/**
 * Webhook isolation: a slow or dead receiver never delays deliveries to other receivers. At most
 * two attempts per receiver origin are in flight across all senders, a receiver that keeps
 * timing out is backed off, one client cannot fill a sender's pool, and deliveries held back
 * for their origin cost the claim nothing.
 */

const TERMINAL = ['succeeded', 'failed', 'expired', 'cancelled'];

/** A loopback server; `handle` decides what to do with each (fully read) request. */
async function server(t: TestContext, handle: (req: http.IncomingMessage, res: http.ServerResponse) => void) {
  const srv = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => handle(req, res));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  cleanup(t)(
    srv,
    (s) =>
      new Promise<void>((r) => {
        s.closeAllConnections();
        s.close(() => r());
      }),
  );
  return `http://127.0.0.1:${(srv.address() as AddressInfo).port}/hook`;
}

/** A receiver that records each request and how many it holds open at once; `answer` gives a status, or 'hang' to never answer. */
async function watchedReceiver(t: TestContext, answer: () => number | 'hang') {
  const state = { open: 0, maxOpen: 0, received: [] as { deliveryId: string; at: number; status: number | 'hang' }[], held: [] as http.ServerResponse[] };
  const url = await server(t, (req, res) => {
    state.open++;
    state.maxOpen = Math.max(state.maxOpen, state.open);
    res.on('close', () => state.open--);
    const status = answer();
    state.received.push({ deliveryId: String(req.headers['x-zhinian-delivery']), at: Date.now(), status });
    if (status === 'hang') state.held.push(res);
    else {
      res.statusCode = status;
      res.end('ok');
    }
  });
  return { url, state };
}

async function freshDb(t: TestContext): Promise<{ dataDir: string; handle: DbHandle }> {
  const dataDir = tempDir();
  const handle = cleanup(t)(await openTestDb(dataDir), (h) => h.close());
  await migrateToLatest(handle);
  return { dataDir, handle };
}

const senderOpts = (handle: DbHandle, owner: string, extra: Partial<DeliveryOptions> = {}): DeliveryOptions => ({
  handle,
  clock: systemClock,
  owner,
  secret: WEBHOOK_SECRET,
  allowPrivateUrls: true,
  ...extra,
});

/** A webhook dispatcher (as each worker process runs one) on `handle`. */
function startDispatcher(t: TestContext, handle: DbHandle, owner: string, extra: Partial<DeliveryOptions> & { concurrency?: number } = {}) {
  return cleanup(t)(
    startWebhookDispatcher({
      ...senderOpts(handle, owner, extra),
      notifier: createNotifier(),
      logger: pino({ level: 'silent' }),
      pollIntervalMs: 50,
      concurrency: extra.concurrency,
    }),
    (d) => d.stop(),
  );
}

let jobSeq = 0;
async function enqueue(handle: DbHandle, url: string, clientId = 'client-a', now = Date.now()): Promise<string> {
  const jobId = `job_iso_${++jobSeq}`;
  await enqueueWebhook(handle.db, { jobId, clientId, url, event: 'generation.succeeded', job: { id: jobId, status: 'succeeded' }, now });
  const row = await handle.db.selectFrom('webhook_deliveries').select('id').where('job_id', '=', jobId).executeTakeFirstOrThrow();
  return row.id;
}

async function attemptRows(handle: DbHandle) {
  const rows = await handle.db.selectFrom('webhook_attempts').selectAll().orderBy('started_at').execute();
  return rows.map((r) => ({ ...r, started_at: Number(r.started_at), ended_at: Number(r.started_at) + Number(r.duration_ms) }));
}

/** Most attempts (by their recorded start and end) that overlapped at any moment. */
function maxOverlap(intervals: { started_at: number; ended_at: number }[]): number {
  const edges = intervals.flatMap((i) => [[i.started_at, 1] as const, [i.ended_at, -1] as const]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let current = 0;
  let max = 0;
  for (const [, delta] of edges) {
    current += delta;
    max = Math.max(max, current);
  }
  return max;
}

describe('webhook isolation', () => {
  test("with 40 hanging receivers of client A, client B's webhook arrives within 2 s of its job finishing (an API and two worker processes)", async (t) => {
    const add = cleanup(t);
    const dataDir = tempDir();
    const cluster = add(createCluster(testEnv(dataDir), { worker: { LOG_LEVEL: 'info' } }), (c) => c.stopAll());
    const api = await cluster.startServer();
    cluster.startWorker();
    cluster.startWorker();
    await waitFor(() => cluster.readyWorkers().length === 2, { timeoutMs: 120_000, what: 'two workers' });
    const call = (p: string, init?: Parameters<typeof callApi>[2]) => callApi(api.url!, p, init);
    const h = add(await openTestDb(dataDir), (x) => x.close());
    // Registered after the processes, so they close first and the hanging attempts end at once.
    let hanging = 0;
    const hangingUrls: string[] = [];
    for (let i = 0; i < 40; i++) {
      hangingUrls.push(
        await server(t, () => {
          hanging++; // accepts, reads, never answers
        }),
      );
    }
    const receiverB = add(await startReceiver(), (r) => r.close());

    const jobsA = await Promise.all(
      hangingUrls.map(async (webhookUrl) => {
        const res = await call('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'ok', width: 64, height: 64, webhookUrl } });
        assert.equal(res.status, 201, JSON.stringify(res.body));
        return res.body.job.id as string;
      }),
    );
    for (const id of jobsA) await waitForJob({ api: call }, id, TERMINAL, 120_000);
    // A's webhooks are due; the senders are full of A's hanging receivers (as far as A may fill them).
    await waitFor(async () => (await h.db.selectFrom('webhook_deliveries').select('id').where('client_id', '=', 'client-a').execute()).length === 40, {
      what: "A's 40 deliveries",
    });
    await waitFor(() => hanging >= 16, { timeoutMs: 30_000, what: "A's receivers to hold the senders' slots" });
    const dueA = await h.db.selectFrom('webhook_deliveries').select('id').where('client_id', '=', 'client-a').where('attempts', '=', 0).execute();
    t.diagnostic(`${hanging} of A's requests hanging, ${dueA.length} of A's deliveries due and not yet tried`);
    assert.ok(dueA.length >= 8, `A still has a backlog of due deliveries (${dueA.length})`);

    const created = await call('/api/v1/jobs', {
      method: 'POST',
      key: KEY_B,
      json: { capability: 'image.generate', prompt: 'ok', width: 64, height: 64, webhookUrl: receiverB.url },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const jobB = await waitForJob({ api: call }, created.body.job.id, TERMINAL, 60_000, KEY_B);
    assert.equal(jobB.status, 'succeeded');
    const hook = await waitFor(() => receiverB.hooks[0], { timeoutMs: 30_000, what: "B's webhook" });
    const delayMs = hook.at - Date.parse(jobB.finishedAt);
    t.diagnostic(
      `B's webhook arrived ${delayMs} ms after B's job finished (${Date.parse(jobB.finishedAt) - Date.parse(jobB.createdAt)} ms after it was created), with ${hanging} of A's requests hanging`,
    );
    assert.equal(hook.body.job.id, jobB.id);
    assert.ok(delayMs <= 2_000, `B's webhook came ${delayMs} ms after its job finished (limit 2000 ms)`);
  });

  test('at most 2 attempts per origin are in flight across two worker processes; a stuck receiver does not hold up its client’s other receivers; no attempt is sent twice', async (t) => {
    const { dataDir, handle } = await freshDb(t);
    let release = false;
    const slow = await watchedReceiver(t, () => (release ? 200 : 'hang'));
    const fast = await watchedReceiver(t, () => 200);
    const cluster = cleanup(t)(createCluster(testEnv(dataDir), { worker: { LOG_LEVEL: 'info' } }), (c) => c.stopAll());
    cluster.startWorker();
    cluster.startWorker();
    await waitFor(() => cluster.readyWorkers().length === 2, { timeoutMs: 120_000, what: 'two workers' });

    const slowIds: string[] = [];
    for (let i = 0; i < 20; i++) slowIds.push(await enqueue(handle, slow.url));
    const fastId = await enqueue(handle, fast.url);
    await waitFor(() => fast.state.received.length === 1, { timeoutMs: 15_000, what: 'the fast receiver’s delivery' });
    await waitFor(() => slow.state.received.length === 2, { timeoutMs: 15_000, what: 'two requests at the stuck receiver' });
    await sleep(1_000); // both workers poll meanwhile: nothing more may go to the stuck receiver
    assert.equal(slow.state.received.length, 2, 'only 2 requests to the stuck origin while both hang');
    assert.equal(fast.state.received[0]!.deliveryId, fastId);

    release = true;
    for (const res of slow.state.held.splice(0)) {
      res.statusCode = 200;
      res.end('ok');
    }
    await waitFor(
      async () => {
        const rows = await handle.db.selectFrom('webhook_deliveries').select('status').execute();
        return rows.length === 21 && rows.every((r) => r.status === 'delivered');
      },
      { timeoutMs: 60_000, what: 'all 21 deliveries' },
    );
    assert.ok(slow.state.maxOpen <= 2, `the receiver had ${slow.state.maxOpen} requests open at once`);
    const tries = await attemptRows(handle);
    assert.equal(maxOverlap(tries.filter((a) => a.delivery_id !== fastId)), 2, 'two attempts at once to the origin, never more');
    assert.deepEqual(
      tries.map((a) => a.attempt),
      Array(21).fill(1),
      'one attempt each',
    );
    assert.deepEqual(slow.state.received.map((r) => r.deliveryId).sort(), [...slowIds].sort(), 'each delivery sent once');
    const perWorker = new Map<string, number>();
    for (const line of cluster.linesMentioning('"msg":"webhook attempt"')) perWorker.set(line.split('/')[0]!, (perWorker.get(line.split('/')[0]!) ?? 0) + 1);
    t.diagnostic(`attempts logged per worker: ${JSON.stringify(Object.fromEntries(perWorker))}`);
  });

  test('claims racing from two connections never put more than 2 attempts of one origin in flight', async (t) => {
    const { dataDir, handle } = await freshDb(t);
    // PostgreSQL: two pools, as two processes have. SQLite: one connection (two in one process
    // would wait on each other's write lock synchronously); processes are serialised by its
    // single writer, which the claim's transaction (BEGIN IMMEDIATE) takes first.
    const other = TEST_BACKEND === 'postgres' ? cleanup(t)(await openTestDb(dataDir), (h) => h.close()) : handle;
    const url = 'http://127.0.0.1:9/hook';
    for (let i = 0; i < 12; i++) await enqueue(handle, url);
    await enqueue(handle, 'http://127.0.0.2:9/hook');
    const claims = await Promise.all(Array.from({ length: 16 }, (_, i) => claimDueDelivery(senderOpts(i % 2 ? other : handle, `wrk_${i}`))));
    const got = claims.filter((c) => c !== null);
    const perOrigin = new Map<string, number>();
    for (const c of got) perOrigin.set(c.origin, (perOrigin.get(c.origin) ?? 0) + 1);
    assert.deepEqual(Object.fromEntries(perOrigin), { [originOf(url)]: 2, 'http://127.0.0.2:9': 1 });
    assert.equal(new Set(got.map((c) => c.id)).size, got.length, 'no delivery claimed twice');
  });

  test('a receiver that keeps timing out is backed off (its attempts spread out) and recovers after a 2xx', async (t) => {
    const { handle } = await freshDb(t);
    let answering = false;
    const receiver = await watchedReceiver(t, () => (answering ? 200 : 'hang'));
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(await enqueue(handle, receiver.url));
    const firstBlockMs = 1_000;
    startDispatcher(t, handle, 'wrk_one', { timeoutMs: 300, endpoints: { firstBlockMs, maxBlockMs: 4_000 } });
    const endpoint = () => handle.db.selectFrom('webhook_endpoints').selectAll().where('origin', '=', originOf(receiver.url)).executeTakeFirst();

    // Every block the origin gets: when it was written, until when, after how many failures.
    const blocks = new Map<number, { at: number; until: number; failures: number }>();
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const row = await endpoint();
        if (row?.blocked_until != null)
          blocks.set(Number(row.blocked_until), { at: Number(row.updated_at), until: Number(row.blocked_until), failures: Number(row.consecutive_failures) });
        await sleep(20);
      }
    })();

    // 3 timeouts in a row block the origin for 1 s; each failed probe after that doubles it.
    await waitFor(async () => Number((await endpoint())?.consecutive_failures) >= 5, { timeoutMs: 60_000, what: 'two failed probes' });
    answering = true;
    await waitFor(
      async () => {
        const rows = await handle.db.selectFrom('webhook_deliveries').select('status').execute();
        return rows.every((r) => r.status === 'delivered');
      },
      { timeoutMs: 60_000, what: 'every delivery once the receiver answers' },
    );
    watching = false;
    await watcher;
    const recovered = await endpoint();
    assert.equal(Number(recovered?.consecutive_failures), 0, 'a 2xx clears the failures');
    assert.equal(recovered?.blocked_until, null);

    const tries = await attemptRows(handle);
    assert.ok(maxOverlap(tries) <= 2, 'never more than 2 attempts at once');
    const seen = [...blocks.values()].sort((a, b) => a.until - b.until);
    t.diagnostic(
      `blocks (ms after the first attempt): ${seen.map((b) => `${b.at - tries[0]!.started_at}..${b.until - tries[0]!.started_at} after ${b.failures} failures`).join(', ')}`,
    );
    assert.ok(seen.length >= 3, `blocked 3 times at least (${seen.length})`);
    assert.deepEqual(
      seen.slice(0, 3).map((b) => b.failures),
      [3, 4, 5],
    );
    for (const [i, b] of seen.slice(0, 3).entries()) {
      const length = firstBlockMs * 2 ** i;
      // Written at most a little after the attempt that earned it ended (until = its end + length).
      assert.ok(b.until - b.at <= length && b.until - b.at >= length - 500, `block ${i + 1}: ${b.until - b.at} ms, not about ${length}`);
      const during = tries.filter((a) => a.started_at >= b.at + 50 && a.started_at < b.until);
      assert.deepEqual(during, [], `no attempt started during block ${i + 1}`);
    }
    for (let i = 0; i + 1 < Math.min(seen.length, 3); i++) {
      const probes = tries.filter((a) => a.started_at >= seen[i]!.until && a.started_at < seen[i + 1]!.at);
      assert.equal(probes.length, 1, `one probe between block ${i + 1} and block ${i + 2}`);
      assert.equal(probes[0]!.status_code, null, 'the probe timed out');
    }

    // Every attempt counted was sent, and each delivery was answered 200 once.
    const sent = receiver.state.received;
    assert.equal(sent.length, tries.length, 'one request per recorded attempt');
    const delivered = sent.filter((r) => r.status === 200).map((r) => r.deliveryId);
    assert.deepEqual(delivered.sort(), [...ids].sort());
    const rows = await handle.db.selectFrom('webhook_deliveries').select(['id', 'attempts']).execute();
    for (const row of rows) assert.equal(Number(row.attempts), tries.filter((a) => a.delivery_id === row.id).length, `${row.id}: attempts = attempts sent`);
  });

  test('HTTP error answers do not count against an origin; timeouts and refused connections do', async (t) => {
    const { handle } = await freshDb(t);
    const erroring = await watchedReceiver(t, () => 500);
    const refused = 'http://127.0.0.1:9/hook'; // the discard port: nothing listens on loopback
    for (let i = 0; i < 4; i++) {
      await enqueue(handle, erroring.url);
      await enqueue(handle, refused);
    }
    const opts = senderOpts(handle, 'wrk_one', { timeoutMs: 5_000 });
    for (let i = 0; i < 8; i++) {
      const claimed = await claimDueDelivery(opts);
      if (!claimed) break;
      assert.equal(await attemptDelivery(opts, claimed), 'retry');
    }
    const endpoints = await handle.db.selectFrom('webhook_endpoints').selectAll().execute();
    const of = (url: string) => endpoints.find((e) => e.origin === originOf(url));
    assert.ok(!of(erroring.url) || Number(of(erroring.url)!.consecutive_failures) === 0, 'a receiver that answers is not backed off');
    assert.equal(erroring.state.received.length, 4, 'every delivery to the answering receiver was tried');
    assert.equal(Number(of(refused)?.consecutive_failures), 3, 'three refused connections, then blocked');
    assert.ok(Number(of(refused)?.blocked_until) > Date.now(), 'the refusing origin is blocked');
    const untried = await handle.db
      .selectFrom('webhook_deliveries')
      .select(['attempts', 'held_due_at'])
      .where('origin', '=', originOf(refused))
      .where('attempts', '=', 0)
      .execute();
    assert.equal(untried.length, 1, 'the fourth delivery to the blocked origin waits, untried');
    assert.ok(untried[0]!.held_due_at !== null, 'held back with its own due time');
  });

  test('the migration gives deliveries still to be sent their origin', async (t) => {
    const handle = cleanup(t)(await openTestDb(tempDir()), (h) => h.close());
    // The schema as it was before webhook isolation, with one pending and one sent delivery.
    const { rows } = await sql<{ schema: string | null }>`select current_schema() as schema`.execute(handle.db).catch(() => ({ rows: [{ schema: null }] }));
    const before = new Migrator({
      db: handle.db,
      provider: { getMigrations: async () => ({ '0001-initial': m0001, '0002-engine-routing': m0002, '0003-rate-limits': m0003, '0004-fair-sharing': m0004 }) },
      migrationTableSchema: TEST_BACKEND === 'postgres' ? (rows[0]?.schema ?? undefined) : undefined,
    });
    const { error } = await before.migrateToLatest();
    assert.ifError(error);
    const row = (id: string, url: string, status: string, next: number | null) => ({
      id,
      job_id: `job_${id}`,
      client_id: 'client-a',
      event: 'generation.succeeded',
      url,
      payload: '{}',
      status,
      attempts: 1,
      next_attempt_at: next,
      lease_owner: null,
      last_status_code: null,
      last_error: null,
      created_at: 1,
      delivered_at: null,
    });
    const old = handle.db as unknown as Kysely<any>;
    await old
      .insertInto('webhook_deliveries')
      .values([row('whd_pending', 'HTTPS://Hooks.Example.COM/a?b=1', 'pending', 5), row('whd_sent', 'http://example.com/x', 'delivered', null)])
      .execute();
    await migrateToLatest(handle);
    const after = await handle.db.selectFrom('webhook_deliveries').select(['id', 'origin', 'held_due_at']).orderBy('id').execute();
    assert.deepEqual(after, [
      { id: 'whd_pending', origin: 'https://hooks.example.com:443', held_due_at: null },
      { id: 'whd_sent', origin: '', held_due_at: null },
    ]);
    assert.equal(originOf('http://[::1]:8080/x'), 'http://[::1]:8080');
    assert.equal(originOf('http://example.com/x'), 'http://example.com:80');
  });

  test('10,000 due deliveries of blocked receivers: other receivers are served at once, the claim stays bounded, and idle polls only read', async (t) => {
    const { handle } = await freshDb(t);
    const clock = { at: Date.now(), now: () => clock.at };
    const start = clock.at;
    const BLOCKED = 2_000;
    await handle.db
      .insertInto('webhook_endpoints')
      .values(
        Array.from({ length: BLOCKED }, (_, i) => ({
          client_id: 'client-a',
          origin: `http://dead-${i}.example:80`,
          consecutive_failures: 3,
          blocked_until: start + 3_600_000,
          updated_at: start,
        })),
      )
      .execute();
    // Ids in due order, as enqueue would give them: 10,000 for the blocked origins first, then
    // client A's delivery to a healthy receiver, and client B's.
    const rows = Array.from({ length: 10_000 }, (_, i) => ({
      id: `whd_dead_${String(i).padStart(5, '0')}`,
      job_id: `job_dead_${i}`,
      client_id: 'client-a',
      event: 'generation.succeeded',
      url: `http://dead-${i % BLOCKED}.example/hook`,
      payload: '{}',
      status: 'pending',
      attempts: 0,
      next_attempt_at: start - 60_000 + i,
      lease_owner: null,
      last_status_code: null,
      last_error: null,
      created_at: start - 60_000 + i,
      delivered_at: null,
      origin: `http://dead-${i % BLOCKED}.example:80`,
      held_due_at: null,
    }));
    for (let i = 0; i < rows.length; i += 500)
      await handle.db
        .insertInto('webhook_deliveries')
        .values(rows.slice(i, i + 500))
        .execute();
    const healthyA = await enqueue(handle, 'http://127.0.0.1:9/a', 'client-a', start - 1_000);
    const healthyB = await enqueue(handle, 'http://127.0.0.1:9/b', 'client-b', start - 500);

    // Counts the statements of one claim, and whether any of them writes.
    let statements = 0;
    let writes = 0;
    const counter: KyselyPlugin = {
      transformQuery(args) {
        statements++;
        const node: RootOperationNode = args.node;
        const raw = node.kind === 'RawNode' ? node.sqlFragments.join(' ').toLowerCase() : '';
        if (node.kind !== 'SelectQueryNode' && !(node.kind === 'RawNode' && raw.trimStart().startsWith('with recursive'))) writes++;
        return args.node;
      },
      transformResult: async (args) => args.result,
    };
    const opts = senderOpts({ ...handle, db: handle.db.withPlugin(counter) }, 'wrk_one', { clock });

    const first = await claimDueDelivery(opts);
    assert.equal(first?.id, healthyB, "client B's delivery is claimed at once");
    let claimedA: string | null = null;
    let claims = 1;
    let most = 0;
    while (!claimedA && claims < 50) {
      statements = 0;
      const next = await claimDueDelivery(opts);
      most = Math.max(most, statements);
      claims++;
      if (next) {
        assert.equal(next.id, healthyA, 'only the healthy receiver’s delivery is claimable');
        claimedA = next.id;
      }
    }
    t.diagnostic(`A's healthy delivery claimed by claim ${claims}; at most ${most} statements per claim`);
    assert.equal(claimedA, healthyA, "client A's healthy receiver is served despite A's 10,000 blocked deliveries before it");
    assert.ok(claims <= 10, `within a few claims (${claims})`);
    assert.ok(most <= 200, `a claim is a bounded number of statements (${most})`);

    // Every blocked delivery is held back now, untried, keeping its own due time.
    const due = await handle.db.selectFrom('webhook_deliveries').select('id').where('next_attempt_at', '<=', clock.at).execute();
    assert.equal(due.length, 0, 'nothing left in the due range');
    const held = await handle.db.selectFrom('webhook_deliveries').select(['id', 'held_due_at', 'next_attempt_at', 'attempts']).where('id', 'like', 'whd_dead_%').execute();
    assert.ok(held.every((r) => Number(r.attempts) === 0 && r.held_due_at !== null && Number(r.next_attempt_at) === start + 3_600_000));
    assert.equal(Number(held.find((r) => r.id === 'whd_dead_00007')!.held_due_at), start - 60_000 + 7);

    // An idle poll now: reads only, a handful of statements.
    statements = 0;
    writes = 0;
    assert.equal(await claimDueDelivery(opts), null);
    assert.equal(writes, 0, 'an idle poll writes nothing (no transaction, no lock)');
    assert.ok(statements <= 2, `an idle poll is ${statements} statements`);

    // When the blocks end, the origins are probed one delivery each.
    await handle.db.updateTable('webhook_deliveries').set({ status: 'delivered', next_attempt_at: null, lease_owner: null }).where('id', 'in', [healthyA, healthyB]).execute();
    clock.at = start + 3_600_000;
    const probe = await claimDueDelivery(opts);
    assert.match(String(probe?.id), /^whd_dead_/);
    assert.equal(probe?.held_due_at, null);
    assert.equal(Number(probe?.attempts), 1, 'its first attempt: the block consumed none');
  });
});
