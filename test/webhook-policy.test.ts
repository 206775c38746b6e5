// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import sharp from 'sharp';
import type { DbHandle } from '../src/db/index.ts';
import type { Engine } from '../src/engines/engine.ts';
import { attemptDelivery, claimDueDelivery, deliveryViewSchema } from '../src/webhooks/index.ts';
import { cleanup, KEY_B, type ReceivedHook, type Stack, startReceiver, startStack, waitFor, waitForJob, WEBHOOK_SECRET } from './helpers.ts';
import { freshDelivery, rawServer } from './webhook-helpers.ts';

/**
 * What partners can rely on when debugging webhooks: a 410 stops the retries, Retry-After is
 * honoured, a URL the guard refuses fails at once, and the API shows every delivery with its
 * attempts and sends one again under the same webhook-id.
 */

const PNG = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#2080c0' } })
  .png()
  .toBuffer();

const engine: Engine = {
  name: 'test',
  capabilities: ['image.generate'],
  async run(_req, ctx) {
    const file = path.join(ctx.workDir, 'out.png');
    await fsp.writeFile(file, PNG);
    return [{ path: file, kind: 'image', mimeType: 'image/png' }];
  },
};

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

async function deliveryRow(handle: DbHandle, id: string) {
  return handle.db.selectFrom('webhook_deliveries').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
}

async function attemptRows(handle: DbHandle, id: string) {
  return handle.db.selectFrom('webhook_attempts').selectAll().where('delivery_id', '=', id).orderBy('attempt').execute();
}

/** When the attempt's answer came: the time the retry delay counts from. */
const answeredAt = (attempt: { started_at: number; duration_ms: number }) => Number(attempt.started_at) + Number(attempt.duration_ms);

async function createJob(stack: Stack, webhookUrl: string | undefined, key?: string): Promise<{ id: string }> {
  const res = await stack.api('/api/v1/jobs', {
    method: 'POST',
    key,
    json: { capability: 'image.generate', prompt: 'ok', width: 64, height: 64, ...(webhookUrl ? { webhookUrl } : {}) },
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.job;
}

/** The Standard Webhooks signature a receiver computes (the secret is not `whsec_`: its UTF-8 bytes are the key). */
function assertSigned(hook: ReceivedHook) {
  assert.equal(hook.headers['x-zhinian-signature'], `sha256=${createHmac('sha256', WEBHOOK_SECRET).update(hook.raw).digest('hex')}`);
  const id = String(hook.headers['webhook-id']);
  const timestamp = String(hook.headers['webhook-timestamp']);
  assert.match(timestamp, /^\d+$/);
  assert.ok(Math.abs(Number(timestamp) - Date.now() / 1000) < 300, 'a fresh timestamp');
  const expected = `v1,${createHmac('sha256', WEBHOOK_SECRET).update(`${id}.${timestamp}.${hook.raw}`).digest('base64')}`;
  assert.equal(hook.headers['webhook-signature'], expected);
}

describe('when a delivery stops being retried', () => {
  test('a 410 Gone answer fails the delivery at once: no retry is scheduled', async (t) => {
    const url = await rawServer(t, (_req, res) => {
      res.statusCode = 410;
      res.end();
    });
    const { handle, opts, claimed } = await freshDelivery(t, url);
    assert.equal(await attemptDelivery(opts, claimed), 'failed');
    const row = await deliveryRow(handle, claimed.id);
    assert.equal(row.status, 'failed');
    assert.equal(row.next_attempt_at, null);
    assert.equal(row.last_status_code, 410);
    const [attempt, ...more] = await attemptRows(handle, claimed.id);
    assert.equal(attempt.status_code, 410);
    assert.deepEqual(more, []);
    assert.equal(await claimDueDelivery(opts), null, 'nothing left to send');
  });

  test('a target the URL guard refuses fails at once, with an attempt saying why, and nothing is sent', async (t) => {
    let received = 0;
    const url = await rawServer(t, (_req, res) => {
      received++;
      res.end();
    });
    const cases = [
      // Loopback while private addresses are not allowed.
      { url, allowPrivateUrls: false, why: /refused by the URL guard: address 127\.0\.0\.1 is not public/ },
      { url: url.replace('127.0.0.1', 'localhost'), allowPrivateUrls: false, why: /refused by the URL guard: host localhost is not public/ },
      // A scheme the guard never allows, whatever the setting.
      { url: url.replace('http:', 'ftp:'), allowPrivateUrls: true, why: /refused by the URL guard: scheme ftp: is not allowed/ },
    ];
    for (const c of cases) {
      const { handle, opts, claimed } = await freshDelivery(t, c.url, { allowPrivateUrls: c.allowPrivateUrls });
      assert.equal(await attemptDelivery(opts, claimed), 'failed', c.url);
      const row = await deliveryRow(handle, claimed.id);
      assert.equal(row.status, 'failed');
      assert.equal(row.next_attempt_at, null);
      assert.match(String(row.last_error), c.why);
      const attempts = await attemptRows(handle, claimed.id);
      assert.equal(attempts.length, 1);
      assert.equal(attempts[0].status_code, null);
      assert.match(String(attempts[0].error), c.why);
      // Refused by us, not by the receiver: its origin is not counted as failing (no backoff).
      const endpoints = await handle.db.selectFrom('webhook_endpoints').selectAll().execute();
      assert.deepEqual(
        endpoints.filter((e) => Number(e.consecutive_failures) > 0),
        [],
      );
    }
    assert.equal(received, 0);
  });
});

describe('Retry-After', () => {
  test('a 429 with Retry-After in seconds delays the next attempt by at least that much', async (t) => {
    const url = await rawServer(t, (_req, res) => {
      res.statusCode = 429;
      res.setHeader('retry-after', '20');
      res.end();
    });
    const { handle, opts, claimed } = await freshDelivery(t, url);
    assert.equal(await attemptDelivery(opts, claimed), 'retry');
    const row = await deliveryRow(handle, claimed.id);
    const [attempt] = await attemptRows(handle, claimed.id);
    const delay = Number(row.next_attempt_at) - answeredAt(attempt);
    // The schedule alone says 4–6 s here.
    assert.ok(delay >= 20_000 && delay <= 21_000, `next attempt ${delay} ms after the answer`);
  });

  test('a 503 with an HTTP-date Retry-After is not tried again before that date', async (t) => {
    const until = new Date(Date.now() + 40_000).toUTCString();
    const url = await rawServer(t, (_req, res) => {
      res.statusCode = 503;
      res.setHeader('retry-after', until);
      res.end();
    });
    const { handle, opts, claimed } = await freshDelivery(t, url);
    assert.equal(await attemptDelivery(opts, claimed), 'retry');
    const row = await deliveryRow(handle, claimed.id);
    assert.ok(Number(row.next_attempt_at) >= Date.parse(until), `${new Date(Number(row.next_attempt_at)).toISOString()} before ${until}`);
  });

  test('a Retry-After of a day waits 1 h, the cap', async (t) => {
    const url = await rawServer(t, (_req, res) => {
      res.statusCode = 429;
      res.setHeader('retry-after', '86400');
      res.end();
    });
    const { handle, opts, claimed } = await freshDelivery(t, url);
    assert.equal(await attemptDelivery(opts, claimed), 'retry');
    const row = await deliveryRow(handle, claimed.id);
    const [attempt] = await attemptRows(handle, claimed.id);
    assert.equal(Number(row.next_attempt_at) - answeredAt(attempt), 3_600_000);
  });

  test('end to end: after a 429 with Retry-After: 8 the receiver hears nothing for 8 s, and the API shows when it will', async (t) => {
    const add = cleanup(t);
    const heard: number[] = [];
    const url = await rawServer(t, (req, res) => {
      req.resume();
      req.on('end', () => {
        heard.push(Date.now());
        if (heard.length === 1) {
          res.statusCode = 429;
          res.setHeader('retry-after', '8');
        }
        res.end();
      });
    });
    const stack = add(await startStack({ engines: [engine] }), (s) => s.stop());
    const job = await createJob(stack, url);
    await waitForJob(stack, job.id);
    const waiting = await waitFor(
      async () => {
        const { body } = await stack.api(`/api/v1/jobs/${job.id}/deliveries`);
        const d = body.deliveries?.[0];
        return d?.attempts.length === 1 && d.nextAttemptAt ? d : null;
      },
      { what: 'the first attempt to be recorded' },
    );
    assert.equal(waiting.status, 'pending');
    assert.equal(waiting.attempts[0].statusCode, 429);
    assert.ok(Date.parse(waiting.nextAttemptAt) >= Date.parse(waiting.attempts[0].at) + waiting.attempts[0].durationMs + 8_000, JSON.stringify(waiting));
    await waitFor(() => heard.length >= 2, { timeoutMs: 30_000, what: 'the retry' });
    const gap = heard[1] - heard[0];
    assert.ok(gap >= 8_000, `retried ${gap} ms after the 429`);
  });
});

describe('the deliveries API', () => {
  test("GET /jobs/:id/deliveries shows each delivery and its attempts; another client's job is 404", async (t) => {
    const add = cleanup(t);
    const receiver = add(await startReceiver((_hook, i) => (i === 0 ? 500 : 200)), (r) => r.close());
    const stack = add(await startStack({ engines: [engine] }), (s) => s.stop());
    const job = await createJob(stack, receiver.url);
    await waitForJob(stack, job.id);
    const first = await waitFor(
      async () => {
        const { status, body } = await stack.api(`/api/v1/jobs/${job.id}/deliveries`);
        assert.equal(status, 200);
        return body.deliveries[0]?.attempts.length === 1 ? body : null;
      },
      { what: 'the first attempt' },
    );
    assert.deepEqual(Object.keys(first), ['deliveries']);
    const [d] = first.deliveries;
    assert.deepEqual(Object.keys(d).sort(), ['attempts', 'createdAt', 'event', 'id', 'nextAttemptAt', 'status', 'url']);
    deliveryViewSchema.parse(d); // the shape the OpenAPI document declares
    assert.match(d.id, /^whd_/);
    assert.equal(d.event, 'generation.succeeded');
    assert.equal(d.url, receiver.url);
    assert.equal(d.status, 'pending');
    assert.match(d.createdAt, ISO_MS);
    assert.match(d.nextAttemptAt, ISO_MS);
    assert.deepEqual(Object.keys(d.attempts[0]).sort(), ['at', 'durationMs', 'error', 'statusCode']);
    assert.match(d.attempts[0].at, ISO_MS);
    assert.equal(d.attempts[0].statusCode, 500);
    assert.equal(typeof d.attempts[0].durationMs, 'number');
    assert.equal(d.attempts[0].error, 'receiver answered HTTP 500');

    // Not waiting the ~5 s retry: redelivery sends it now.
    const redone = await stack.api(`/api/v1/jobs/${job.id}/deliveries/${d.id}/redeliver`, { method: 'POST' });
    assert.equal(redone.status, 202, JSON.stringify(redone.body));
    const done = await waitFor(
      async () => {
        const { body } = await stack.api(`/api/v1/jobs/${job.id}/deliveries`);
        return body.deliveries[0].status === 'delivered' ? body.deliveries[0] : null;
      },
      { what: 'the delivery to succeed' },
    );
    assert.equal(done.nextAttemptAt, null);
    // The scheduled retry (~5 s later) may have come first on a very busy machine: then it delivered.
    const outcomes = done.attempts.map((a: { statusCode: number; error: string | null }) => [a.statusCode, a.error]);
    assert.deepEqual(outcomes[0], [500, 'receiver answered HTTP 500']);
    assert.deepEqual(outcomes.slice(1), Array(outcomes.length - 1).fill([200, null]));

    const plain = await createJob(stack, undefined);
    assert.deepEqual((await stack.api(`/api/v1/jobs/${plain.id}/deliveries`)).body, { deliveries: [] }, 'a job without webhookUrl has none');
    for (const [jobId, key] of [
      [job.id, KEY_B],
      ['job_00000000000000000000000000', undefined],
      ['nonsense', undefined],
    ] as const) {
      const res = await stack.api(`/api/v1/jobs/${jobId}/deliveries`, { key });
      assert.equal(res.status, 404, `${jobId} ${key ?? 'own key'}`);
      assert.equal(res.body.code, 'not_found');
      assert.equal(typeof res.body.error, 'string');
    }
  });

  test('redelivery sends a failed (410) delivery once more with the same webhook-id and valid signatures; other clients and other jobs get 404', async (t) => {
    const add = cleanup(t);
    const receiver = add(await startReceiver((_hook, i) => (i === 0 ? 410 : 200)), (r) => r.close());
    const stack = add(await startStack({ engines: [engine] }), (s) => s.stop());
    const job = await createJob(stack, receiver.url);
    await waitForJob(stack, job.id);
    const failed = await waitFor(
      async () => {
        const { body } = await stack.api(`/api/v1/jobs/${job.id}/deliveries`);
        return body.deliveries[0]?.status === 'failed' ? body.deliveries[0] : null;
      },
      { what: 'the 410 to fail the delivery' },
    );
    assert.equal(failed.nextAttemptAt, null);
    assert.equal(failed.attempts.length, 1);
    assert.equal(failed.attempts[0].statusCode, 410);

    // Isolation first, so none of these can have caused the second attempt.
    const otherJob = await createJob(stack, receiver.url);
    const theirJob = await createJob(stack, receiver.url, KEY_B);
    for (const [p, key] of [
      [`/api/v1/jobs/${job.id}/deliveries/${failed.id}/redeliver`, KEY_B],
      [`/api/v1/jobs/${theirJob.id}/deliveries/${failed.id}/redeliver`, KEY_B],
      [`/api/v1/jobs/${otherJob.id}/deliveries/${failed.id}/redeliver`, undefined],
      [`/api/v1/jobs/${job.id}/deliveries/whd_00000000000000000000000000/redeliver`, undefined],
      [`/api/v1/jobs/${job.id}/deliveries/nonsense/redeliver`, undefined],
    ] as const) {
      const res = await stack.api(p, { method: 'POST', key });
      assert.equal(res.status, 404, `${p} ${key ?? 'own key'}`);
      assert.equal(res.body.code, 'not_found');
      assert.equal(typeof res.body.error, 'string');
    }
    await waitForJob(stack, otherJob.id);
    await waitForJob(stack, theirJob.id, undefined, undefined, KEY_B);

    const res = await stack.api(`/api/v1/jobs/${job.id}/deliveries/${failed.id}/redeliver`, { method: 'POST' });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    assert.deepEqual(Object.keys(res.body), ['delivery']);
    assert.equal(res.body.delivery.id, failed.id);
    deliveryViewSchema.parse(res.body.delivery);
    assert.ok(['pending', 'delivered'].includes(res.body.delivery.status), res.body.delivery.status);

    const hooks = () => receiver.hooks.filter((h) => h.body.job.id === job.id);
    await waitFor(() => hooks().length >= 2, { what: 'the redelivery' });
    const [before, again] = hooks();
    assert.equal(again.headers['webhook-id'], failed.id);
    assert.equal(again.headers['x-zhinian-delivery'], failed.id);
    assert.equal(before.headers['webhook-id'], failed.id);
    assert.equal(again.raw, before.raw, 'the same bytes');
    assertSigned(before);
    assertSigned(again);
    const done = await waitFor(
      async () => {
        const { body } = await stack.api(`/api/v1/jobs/${job.id}/deliveries`);
        return body.deliveries[0].status === 'delivered' ? body.deliveries[0] : null;
      },
      { what: 'the redelivery to be recorded' },
    );
    assert.deepEqual(
      done.attempts.map((a: { statusCode: number }) => a.statusCode),
      [410, 200],
    );
    assert.equal(hooks().length, 2, 'one more attempt, not a new retry ladder');
  });

  test('the OpenAPI document lists both routes with their operationIds and the Delivery schema', async (t) => {
    const add = cleanup(t);
    const stack = add(await startStack({ engines: [engine], worker: false }), (s) => s.stop());
    const { body: doc } = await stack.api('/api/v1/openapi.json', { key: '' });
    const list = doc.paths['/api/v1/jobs/{id}/deliveries']?.get;
    const redeliver = doc.paths['/api/v1/jobs/{id}/deliveries/{deliveryId}/redeliver']?.post;
    assert.equal(list?.operationId, 'listJobDeliveries');
    assert.equal(redeliver?.operationId, 'redeliverJobDelivery');
    assert.ok(list.responses['200'] && list.responses['404']);
    assert.ok(redeliver.responses['202'] && redeliver.responses['404']);
    assert.deepEqual(
      redeliver.parameters.map((p: { name: string; in: string }) => `${p.in}:${p.name}`),
      ['path:id', 'path:deliveryId'],
    );
    const delivery = doc.components.schemas.Delivery;
    assert.deepEqual(Object.keys(delivery.properties).sort(), ['attempts', 'createdAt', 'event', 'id', 'nextAttemptAt', 'status', 'url']);
    assert.deepEqual(delivery.properties.status.enum, ['pending', 'delivered', 'failed']);
    assert.deepEqual(Object.keys(delivery.properties.attempts.items.properties).sort(), ['at', 'durationMs', 'error', 'statusCode']);
  });
});
