// @backends sqlite,postgres
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import { migrateToLatest, type DbHandle } from '../src/db/index.ts';
import { attemptDelivery, claimDueDelivery, DEFAULT_DELIVERY_LEASE_MS, type DeliveryOptions, enqueueWebhook } from '../src/webhooks/index.ts';
import { cleanup, openTestDb, tempDir, waitFor, WEBHOOK_SECRET } from './helpers.ts';

/**
 * How long a held delivery waits when a sender is killed mid-attempt. Two clients share one
 * receiver origin (two attempts at once: one each while both have deliveries there). A killed
 * sender's claim stays leased for the whole lease (nobody may send it again before), but it
 * must not keep counting as its client's attempt in flight: once it has missed its renewals,
 * the client's other deliveries there go out, while the other client's live attempt, renewed
 * all along, still counts. The scale-out test found this: with senders killed every few
 * seconds, each kill stopped one client's deliveries to the origin for 30 s and they fell more
 * than two minutes behind.
 */

type Add = ReturnType<typeof cleanup>;

/** One loopback origin: `/hang` holds each request until released, every other path answers 200 at once. */
async function receiver(add: Add) {
  const received: { path: string; id: string }[] = [];
  const hanging: (() => void)[] = [];
  const srv = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      received.push({ path: req.url ?? '/', id: String(req.headers['x-zhinian-delivery']) });
      if (req.url === '/hang') hanging.push(() => res.end('ok'));
      else res.end('ok');
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
  return { base: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, received, release: () => hanging.splice(0).forEach((end) => end()) };
}

describe('held webhook deliveries and killed senders', () => {
  test("a sender killed mid-attempt holds up its client's other deliveries to the origin only until it misses its renewals, not for its whole lease", async (t) => {
    const add = cleanup(t);
    const handle: DbHandle = add(await openTestDb(tempDir()), (h) => h.close());
    await migrateToLatest(handle);
    const rx = await receiver(add);
    const clock = { at: 1_900_000_000_000, now: () => clock.at };
    const t0 = clock.at;
    let seq = 0;
    const enqueue = async (clientId: string, path: string, due: number) => {
      const jobId = `job_held_${++seq}`;
      await enqueueWebhook(handle.db, { jobId, clientId, url: `${rx.base}${path}`, event: 'generation.succeeded', job: { id: jobId }, now: due });
      return (await handle.db.selectFrom('webhook_deliveries').select('id').where('job_id', '=', jobId).executeTakeFirstOrThrow()).id;
    };
    // Renewals every 20 ms of real time, each to the test's clock plus the lease.
    const sender = (owner: string): DeliveryOptions => ({ handle, clock, owner, secret: WEBHOOK_SECRET, allowPrivateUrls: true, timeoutMs: 60_000, heartbeatMs: 20 });
    const row = (id: string) => handle.db.selectFrom('webhook_deliveries').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

    const dead = await enqueue('client-b', '/b', t0 - 3_000);
    const a1 = await enqueue('client-a', '/hang', t0 - 2_000);
    const b2 = await enqueue('client-b', '/b', t0 - 1_000);
    const b3 = await enqueue('client-b', '/b', t0 - 1_000);

    // A sender claims B's first delivery and is killed: nothing renews its claim.
    assert.equal((await claimDueDelivery(sender('wrk_killed')))?.id, dead);
    // A live sender: A's delivery hangs at the receiver (its claim renewed all along).
    const live = sender('wrk_live');
    const claimedA = await claimDueDelivery(live);
    assert.equal(claimedA?.id, a1);
    const attemptA = attemptDelivery(live, claimedA!);
    await waitFor(() => rx.received.some((r) => r.path === '/hang'), { what: "A's request at the receiver" });
    // B has its one attempt "in flight" (the killed one): its others are held back.
    assert.equal(await claimDueDelivery(live), null);
    const held = await row(b2);
    assert.equal(Number(held.held_due_at), t0 - 1_000, 'held, keeping its own due time');

    // Run the clock the way a real one would, a second at a time, sending whatever is claimable.
    const sentAt = new Map<string, number>();
    const leaseEnd = t0 + DEFAULT_DELIVERY_LEASE_MS;
    for (; clock.at < leaseEnd + 5_000 && sentAt.size < 3; ) {
      clock.at += 1_000;
      // A's live claim is renewed to the new time before anyone looks (a heartbeat every 20 ms).
      await waitFor(async () => Number((await row(a1)).next_attempt_at) >= clock.at + DEFAULT_DELIVERY_LEASE_MS, { what: "A's renewal" });
      for (let d = await claimDueDelivery(live); d; d = await claimDueDelivery(live)) {
        assert.notEqual(d.client_id, 'client-a', "A's live attempt still counts: A gets no second one");
        assert.equal(await attemptDelivery(live, d), 'delivered');
        sentAt.set(d.id, clock.at);
      }
    }
    t.diagnostic(
      `B's held deliveries sent ${[b2, b3].map((id) => (sentAt.get(id) ?? Number.NaN) - (t0 - 1_000)).join(' and ')} ms after due; the killed claim retaken ${(sentAt.get(dead) ?? Number.NaN) - t0} ms after it was taken`,
    );
    for (const id of [b2, b3]) {
      assert.ok(sentAt.has(id), `${id} was sent`);
      assert.ok(sentAt.get(id)! < leaseEnd, `${id} went out before the killed claim's lease lapsed (${sentAt.get(id)! - t0} ms after the kill)`);
      assert.ok(sentAt.get(id)! <= t0 + DEFAULT_DELIVERY_LEASE_MS / 3 + 1_000, `${id}: held no longer than the killed sender's missed renewals`);
    }
    // The killed claim itself is sent again only once its lease has lapsed (never two senders at once).
    assert.ok(sentAt.has(dead), 'the killed claim was taken over');
    assert.ok(sentAt.get(dead)! >= leaseEnd, `taken over ${sentAt.get(dead)! - t0} ms after it was claimed, lease ${DEFAULT_DELIVERY_LEASE_MS} ms`);
    assert.equal(Number((await row(dead)).attempts), 2);
    assert.equal((await row(a1)).lease_owner, 'wrk_live', "A's hanging attempt is still its sender's");

    rx.release();
    assert.equal(await attemptA, 'delivered');
  });
});
