// @backends sqlite,postgres
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import { type Kysely, Migrator, sql } from 'kysely';
import pino from 'pino';
import { migrateToLatest, type DbHandle } from '../src/db/index.ts';
import { systemClock } from '../src/lib/clock.ts';
import { createNotifier } from '../src/lib/notifier.ts';
import { type DeliveryOptions, enqueueWebhook, originOf, startWebhookDispatcher } from '../src/webhooks/index.ts';
import * as m0001 from '../src/db/migrations/0001-initial.ts';
import * as m0002 from '../src/db/migrations/0002-engine-routing.ts';
import * as m0003 from '../src/db/migrations/0003-rate-limits.ts';
import * as m0004 from '../src/db/migrations/0004-fair-sharing.ts';
import * as m0005 from '../src/db/migrations/0005-webhook-isolation.ts';
import * as m0006 from '../src/db/migrations/0006-console.ts';
import { cleanup, openTestDb, TEST_BACKEND, tempDir, waitFor, WEBHOOK_SECRET } from './helpers.ts';

/**
 * Webhook fairness between clients at one receiver origin: two clients send to the same
 * `scheme://host:port`, client A to a path that is slow or hangs, client B to a path that
 * answers at once. A's backlog and A's hanging requests take only A's part of the origin's
 * capacity, and A's timeouts back off only A's deliveries there.
 */

type Mode = 'fast' | 'slow' | 'hang';

/** One loopback origin; each path answers as `modeOf(path)` says. Records every request. */
async function sharedOrigin(add: Add, modeOf: (path: string) => Mode, slowMs = 800) {
  const state = {
    open: new Map<string, number>(),
    received: [] as { path: string; deliveryId: string; at: number }[],
    answered: [] as { path: string; deliveryId: string; at: number }[],
  };
  const srv = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const path = req.url ?? '/';
      const deliveryId = String(req.headers['x-zhinian-delivery']);
      state.open.set(path, (state.open.get(path) ?? 0) + 1);
      res.on('close', () => state.open.set(path, (state.open.get(path) ?? 1) - 1));
      state.received.push({ path, deliveryId, at: Date.now() });
      const answer = () => {
        state.answered.push({ path, deliveryId, at: Date.now() });
        res.end('ok');
      };
      const mode = modeOf(path);
      if (mode === 'fast') answer();
      else if (mode === 'slow') setTimeout(answer, slowMs);
      // 'hang': accepts and reads, never answers
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  add(
    srv,
    (s) =>
      new Promise<void>((r) => {
        s.closeAllConnections();
        s.close(() => r());
      }),
  );
  const base = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  /** Ends every request still open (registered after the dispatcher, it lets the dispatcher stop at once). */
  const hangUp = async () => srv.closeAllConnections();
  return { base, state, hangUp, openAt: (path: string) => state.open.get(path) ?? 0 };
}

/** Registers what a test started, stopped newest first (the dispatcher before the receiver and the database). */
type Add = ReturnType<typeof cleanup>;

async function freshDb(add: Add, dataDir = tempDir()): Promise<DbHandle> {
  const handle = add(await openTestDb(dataDir), (h) => h.close());
  await migrateToLatest(handle);
  return handle;
}

function startDispatcher(add: Add, handle: DbHandle, extra: Partial<DeliveryOptions> = {}) {
  const notifier = createNotifier();
  const pump = add(
    startWebhookDispatcher({
      handle,
      clock: systemClock,
      owner: extra.owner ?? 'wrk_fair',
      secret: WEBHOOK_SECRET,
      allowPrivateUrls: true,
      notifier,
      logger: pino({ level: 'silent' }),
      pollIntervalMs: 50,
      ...extra,
    }),
    (d) => d.stop(),
  );
  return { pump, wake: () => notifier.webhookDue() };
}

let jobSeq = 0;
async function enqueue(handle: DbHandle, url: string, clientId: string): Promise<string> {
  const jobId = `job_fair_${++jobSeq}`;
  await enqueueWebhook(handle.db, { jobId, clientId, url, event: 'generation.succeeded', job: { id: jobId, status: 'succeeded' }, now: Date.now() });
  const row = await handle.db.selectFrom('webhook_deliveries').select('id').where('job_id', '=', jobId).executeTakeFirstOrThrow();
  return row.id;
}

const status = async (handle: DbHandle, id: string) => (await handle.db.selectFrom('webhook_deliveries').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status;

describe('webhook fairness at one receiver origin', () => {
  test("40 slow deliveries of client A to one path do not hold up client B's event to another path of the same origin", async (t) => {
    const add = cleanup(t);
    const handle = await freshDb(add);
    const origin = await sharedOrigin(add, (path) => (path === '/a' ? 'slow' : 'fast'));
    for (let i = 0; i < 40; i++) await enqueue(handle, `${origin.base}/a`, 'client-a');
    const { wake } = startDispatcher(add, handle);
    // A fills the origin (it is alone there): its requests are in flight.
    await waitFor(() => origin.openAt('/a') >= 2, { timeoutMs: 30_000, what: "A's requests in flight" });

    const enqueuedAt = Date.now();
    const idB = await enqueue(handle, `${origin.base}/b`, 'client-b');
    wake();
    const hook = await waitFor(() => origin.state.received.find((r) => r.deliveryId === idB), { timeoutMs: 60_000, what: "B's event" });
    const answeredA = origin.state.answered.filter((r) => r.path === '/a' && r.at <= hook.at).length;
    t.diagnostic(`B's event arrived ${hook.at - enqueuedAt} ms after it was due, after ${answeredA} of A's 40 slow deliveries were answered`);
    await waitFor(async () => (await status(handle, idB)) === 'delivered', { what: "B's delivery recorded" });
    // Behind A's backlog B would come after most of A's 40 (each 0.8 s, two at a time: ~16 s).
    assert.ok(answeredA <= 6, `B waited for ${answeredA} of A's slow deliveries`);
    assert.ok(origin.state.answered.filter((r) => r.path === '/a').length < 40, "B's event arrived while A's backlog was still being sent");
  });

  test("8 hanging deliveries of client A to one path: client B's event to the same origin is delivered while A's requests still hang (two senders)", async (t) => {
    const add = cleanup(t);
    const dataDir = tempDir();
    const handle = await freshDb(add, dataDir);
    // PostgreSQL: a second pool, as a second process has. SQLite: one connection (two in one
    // process would wait on each other's write lock synchronously); processes are serialised
    // by its single writer, which every claim's transaction takes first.
    const other = TEST_BACKEND === 'postgres' ? add(await openTestDb(dataDir), (h) => h.close()) : handle;
    const origin = await sharedOrigin(add, (path) => (path === '/a' ? 'hang' : 'fast'));
    const idsA: string[] = [];
    for (let i = 0; i < 8; i++) idsA.push(await enqueue(handle, `${origin.base}/a`, 'client-a'));
    // The contract's 10 s limit per attempt.
    const { wake } = startDispatcher(add, handle, { owner: 'wrk_one' });
    const second = startDispatcher(add, other, { owner: 'wrk_two' });
    add(origin, (o) => o.hangUp());
    await waitFor(() => origin.openAt('/a') >= 2, { timeoutMs: 30_000, what: "A's hanging requests" });

    const enqueuedAt = Date.now();
    const idB = await enqueue(handle, `${origin.base}/b`, 'client-b');
    wake();
    second.wake();
    await waitFor(async () => (await status(handle, idB)) === 'delivered', { timeoutMs: 240_000, what: "B's delivery" });
    const arrivedAt = origin.state.received.find((r) => r.deliveryId === idB)!.at;
    const triedA = await handle.db.selectFrom('webhook_attempts').select('delivery_id').where('delivery_id', 'in', idsA).execute();
    t.diagnostic(`B's event arrived ${arrivedAt - enqueuedAt} ms after it was due; ${origin.openAt('/a')} of A's requests hanging, ${triedA.length} of A's attempts ended`);
    // Not a timing bound: B is delivered before any of A's hanging attempts has ended.
    assert.equal(triedA.length, 0, "no attempt of A ended (timed out) before B's delivery was recorded");
    assert.ok(origin.openAt('/a') >= 1, "A's requests still hang");
    assert.equal(origin.state.received.filter((r) => r.path === '/a').length, 2, "A alone took the origin's 2 slots across both senders, and no more once B came");
    assert.equal(originOf(`${origin.base}/a`), originOf(`${origin.base}/b`));
  });

  test("client A's timing-out path blocks A's deliveries to the origin, not client B's", async (t) => {
    const add = cleanup(t);
    const handle = await freshDb(add);
    const origin = await sharedOrigin(add, (path) => (path === '/a' ? 'hang' : 'fast'));
    const idsA: string[] = [];
    for (let i = 0; i < 6; i++) idsA.push(await enqueue(handle, `${origin.base}/a`, 'client-a'));
    const { wake } = startDispatcher(add, handle, { timeoutMs: 300, endpoints: { firstBlockMs: 60_000 } });
    add(origin, (o) => o.hangUp());
    const lane = (clientId: string) =>
      handle.db.selectFrom('webhook_endpoints').selectAll().where('client_id', '=', clientId).where('origin', '=', originOf(origin.base)).executeTakeFirst();
    // Three timeouts in a row: A is blocked at the origin for a minute.
    await waitFor(async () => Number((await lane('client-a'))?.blocked_until) > Date.now(), { timeoutMs: 30_000, what: "A's block" });

    const idsB: string[] = [];
    for (let i = 0; i < 4; i++) idsB.push(await enqueue(handle, `${origin.base}/b`, 'client-b'));
    wake();
    await waitFor(async () => (await Promise.all(idsB.map((id) => status(handle, id)))).every((s) => s === 'delivered'), { timeoutMs: 30_000, what: "B's deliveries" });
    const blockedA = await lane('client-a');
    assert.ok(Number(blockedA?.blocked_until) > Date.now(), 'A is still blocked at the origin');
    assert.equal(Number(blockedA?.consecutive_failures), 3);
    assert.equal(await lane('client-b'), undefined, 'no failure was counted for B');
    // Attempts in flight when the block began end during it; none starts while it lasts.
    const sentA = origin.state.received.filter((r) => r.path === '/a');
    assert.deepEqual(
      sentA.filter((r) => r.at > Number(blockedA?.updated_at) + 50),
      [],
      'no request of A after its block began',
    );
    const untried = await handle.db.selectFrom('webhook_deliveries').select(['attempts', 'held_due_at']).where('id', 'in', idsA).where('attempts', '=', 0).execute();
    assert.equal(untried.length, 6 - sentA.length, "A's other deliveries wait for its block, untried");
    assert.ok(untried.length >= 2);
  });

  test('two clients with backlogs at one origin share its capacity: one attempt each in flight while both wait', async (t) => {
    const add = cleanup(t);
    const handle = await freshDb(add);
    const origin = await sharedOrigin(add, () => 'slow', 300);
    const ids = { 'client-a': [] as string[], 'client-b': [] as string[] };
    for (let i = 0; i < 10; i++) {
      ids['client-a'].push(await enqueue(handle, `${origin.base}/a`, 'client-a'));
      ids['client-b'].push(await enqueue(handle, `${origin.base}/b`, 'client-b'));
    }
    startDispatcher(add, handle);
    await waitFor(async () => (await handle.db.selectFrom('webhook_deliveries').select('id').where('status', '=', 'delivered').execute()).length === 20, {
      timeoutMs: 60_000,
      what: 'all 20 deliveries',
    });
    const tries = (
      await handle.db
        .selectFrom('webhook_attempts')
        .innerJoin('webhook_deliveries', 'webhook_deliveries.id', 'webhook_attempts.delivery_id')
        .select(['client_id', 'started_at', 'duration_ms'])
        .execute()
    ).map((r) => ({ client: r.client_id, start: Number(r.started_at), end: Number(r.started_at) + Number(r.duration_ms) }));
    // While both clients still had deliveries to start, each had one attempt in flight at most.
    const lastStart = (c: string) => Math.max(...tries.filter((x) => x.client === c).map((x) => x.start));
    const both = Math.min(lastStart('client-a'), lastStart('client-b'));
    for (const client of ['client-a', 'client-b']) {
      const mine = tries.filter((x) => x.client === client && x.start < both);
      const overlap = Math.max(...mine.map((x) => mine.filter((y) => y.start <= x.start && y.end > x.start).length));
      assert.equal(overlap, 1, `${client} had ${overlap} attempts at once while the other waited`);
    }
    const total = Math.max(...tries.map((x) => tries.filter((y) => y.start <= x.start && y.end > x.start).length));
    assert.ok(total <= 2, `${total} attempts at once at the origin`);
    t.diagnostic(
      `both clients served until ${both - Math.min(...tries.map((x) => x.start))} ms; their last attempts started ${Math.abs(lastStart('client-a') - lastStart('client-b'))} ms apart`,
    );
  });

  test("the migration carries an origin's running block over to each client with deliveries still to be sent there", async (t) => {
    const add = cleanup(t);
    const handle = add(await openTestDb(tempDir()), (h) => h.close());
    const { rows } = await sql<{ schema: string | null }>`select current_schema() as schema`.execute(handle.db).catch(() => ({ rows: [{ schema: null }] }));
    const before = new Migrator({
      db: handle.db,
      provider: {
        getMigrations: async () => ({
          '0001-initial': m0001,
          '0002-engine-routing': m0002,
          '0003-rate-limits': m0003,
          '0004-fair-sharing': m0004,
          '0005-webhook-isolation': m0005,
          '0006-console': m0006,
        }),
      },
      migrationTableSchema: TEST_BACKEND === 'postgres' ? (rows[0]?.schema ?? undefined) : undefined,
    });
    assert.ifError((await before.migrateToLatest()).error);
    const old = handle.db as unknown as Kysely<any>;
    const origin = 'https://hooks.example.com:443';
    await old.insertInto('webhook_endpoints').values({ origin, consecutive_failures: 4, blocked_until: 5_000, updated_at: 1_000 }).execute();
    const row = (id: string, clientId: string, next: number | null) => ({
      id,
      job_id: `job_${id}`,
      client_id: clientId,
      event: 'generation.succeeded',
      url: `${origin}/hook`,
      payload: '{}',
      status: next === null ? 'delivered' : 'pending',
      attempts: 1,
      next_attempt_at: next,
      lease_owner: null,
      last_status_code: null,
      last_error: null,
      created_at: 1,
      delivered_at: null,
      origin,
      held_due_at: null,
    });
    await old
      .insertInto('webhook_deliveries')
      .values([row('whd_1', 'client-a', 5_000), row('whd_2', 'client-a', 5_000), row('whd_3', 'client-b', 5_000), row('whd_4', 'client-c', null)])
      .execute();
    await migrateToLatest(handle);
    const lanes = await handle.db.selectFrom('webhook_endpoints').selectAll().orderBy('client_id').execute();
    assert.deepEqual(
      lanes.map((l) => ({ ...l, consecutive_failures: Number(l.consecutive_failures), blocked_until: Number(l.blocked_until), updated_at: Number(l.updated_at) })),
      ['client-a', 'client-b'].map((client_id) => ({ client_id, origin, consecutive_failures: 4, blocked_until: 5_000, updated_at: 1_000 })),
    );
  });
});
