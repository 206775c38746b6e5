import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';
import { migrateToLatest } from '../src/db/index.ts';
import { systemClock } from '../src/lib/clock.ts';
import { claimDueDelivery, type DeliveryOptions, enqueueWebhook } from '../src/webhooks/index.ts';
import { cleanup, openTestDb, tempDir, WEBHOOK_SECRET } from './helpers.ts';

/**
 * A claimed delivery to `url` on a fresh database, for driving `attemptDelivery` directly. Its
 * time limit is generous (a busy machine may take hundreds of milliseconds for a first
 * connection) except in the tests about the limit itself.
 */
export async function freshDelivery(t: TestContext, url: string, { attemptsSoFar = 0, timeoutMs = 5_000, allowPrivateUrls = true } = {}) {
  const add = cleanup(t);
  const handle = add(await openTestDb(tempDir()), (h) => h.close());
  await migrateToLatest(handle);
  await enqueueWebhook(handle.db, {
    jobId: 'job_test',
    clientId: 'client-a',
    url,
    event: 'generation.succeeded',
    job: { id: 'job_test', status: 'succeeded' },
    now: Date.now(),
  });
  if (attemptsSoFar > 0) await handle.db.updateTable('webhook_deliveries').set({ attempts: attemptsSoFar }).execute();
  const opts: DeliveryOptions = { handle, clock: systemClock, owner: 'wrk_test', secret: WEBHOOK_SECRET, allowPrivateUrls, timeoutMs };
  const claimed = await claimDueDelivery(opts);
  assert.ok(claimed);
  return { handle, opts, claimed, add };
}

/** A loopback server whose handler decides what (if anything) to answer. */
export async function rawServer(t: TestContext, handler: http.RequestListener) {
  const server = http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup(t)(
    server,
    (s) =>
      new Promise<void>((r) => {
        s.closeAllConnections();
        s.close(() => r());
      }),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
}
