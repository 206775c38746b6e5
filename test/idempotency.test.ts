// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { callApi, KEY_B, startStack, tempDir, type Stack } from './helpers.ts';

describe('idempotency', () => {
  let first: Stack;
  let second: Stack;

  before(async () => {
    // Two API instances on one database, as behind a load balancer.
    const dataDir = tempDir();
    first = await startStack({ dataDir, worker: false });
    second = await startStack({ dataDir, worker: false });
  });
  after(async () => {
    await first.stop();
    await second.stop();
  });

  const body = { capability: 'image.generate', prompt: 'idempotent fox', width: 512, height: 512 };

  test('racing duplicates across two API instances create exactly one job', async () => {
    const key = `race-${Date.now()}`;
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => callApi(i % 2 ? first.url : second.url, '/api/v1/jobs', { method: 'POST', json: body, headers: { 'idempotency-key': key } })),
    );
    const ids = new Set(results.map((r) => r.body.job.id));
    assert.equal(ids.size, 1);
    assert.equal(results.filter((r) => r.status === 201 && r.body.reused === false).length, 1);
    assert.equal(results.filter((r) => r.status === 200 && r.body.reused === true).length, 39);
    const list = await first.api('/api/v1/jobs?limit=200');
    assert.equal(list.body.jobs.filter((j: any) => j.prompt === body.prompt && ids.has(j.id)).length, 1);
  });

  test('keys are scoped per client: the same key for another client makes its own job', async () => {
    const key = `shared-${Date.now()}`;
    const a = await first.api('/api/v1/jobs', { method: 'POST', json: body, headers: { 'idempotency-key': key } });
    const b = await first.api('/api/v1/jobs', { method: 'POST', json: body, headers: { 'idempotency-key': key }, key: KEY_B });
    assert.equal(a.status, 201);
    assert.equal(b.status, 201);
    assert.notEqual(a.body.job.id, b.body.job.id);
  });

  test('same key with a different body is a 409 even while racing', async () => {
    const key = `conflict-${Date.now()}`;
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        callApi(first.url, '/api/v1/jobs', { method: 'POST', json: { ...body, prompt: i === 0 ? 'one' : 'two' }, headers: { 'idempotency-key': key } }),
      ),
    );
    const created = results.filter((r) => r.status === 201);
    assert.equal(created.length, 1);
    const winnerPrompt = created[0].body.job.prompt;
    for (const r of results) {
      if (r.status === 201) continue;
      const samePrompt = winnerPrompt === (r === results[0] ? 'one' : 'two');
      assert.equal(r.status, samePrompt ? 200 : 409, JSON.stringify(r.body));
      if (r.status === 409) assert.match(r.body.error, /Idempotency-Key/);
    }
  });
});
