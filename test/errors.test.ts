// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { callApi, KEY_A, KEY_B, startStack, waitForJob, type Stack } from './helpers.ts';

type Res = { status: number; body: any; headers: Headers };

/** `{ error }` is a non-empty string and carries no stack trace. */
function assertCleanError(res: Res, status: number) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(typeof res.body, 'object', String(res.body));
  assert.equal(typeof res.body?.error, 'string', JSON.stringify(res.body));
  assert.ok(res.body.error.length > 0);
  const text = JSON.stringify(res.body);
  assert.ok(!(text.includes('at ') && text.includes('.ts:')), `stack trace in ${text}`);
  assert.doesNotMatch(text, /\.(ts|js):\d+/);
  assert.ok(!('stack' in res.body), 'no stack field');
}

function assertNamesField(res: Res, field: string | RegExp) {
  assertCleanError(res, 400);
  if (typeof field === 'string') assert.ok(res.body.error.includes(field), `error should name ${field}: ${res.body.error}`);
  else assert.match(res.body.error, field);
}

async function uploadText(stack: Stack, key: string, text: string) {
  const form = new FormData();
  form.append('files', new Blob([text], { type: 'text/plain' }), 'input.txt');
  const res = await stack.api('/api/v1/assets', { method: 'POST', body: form, key });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.assets[0];
}

/** A raw POST /jobs with exactly this body text. */
async function postRaw(stack: Stack, body: string, headers: Record<string, string> = {}): Promise<Res> {
  return stack.api('/api/v1/jobs', { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
}

describe('errors on a stack without a worker', () => {
  // No worker: jobs stay queued, so nothing races the assertions.
  let stack: Stack;
  let ownAsset: any;
  let foreignAsset: any;

  before(async () => {
    stack = await startStack({ worker: false });
    ownAsset = await uploadText(stack, KEY_A, 'mine');
    foreignAsset = await uploadText(stack, KEY_B, 'not yours');
  });
  after(async () => {
    await stack.stop();
  });

  const create = (json: unknown, headers: Record<string, string> = {}) => stack.api('/api/v1/jobs', { method: 'POST', json, headers });

  describe('POST /jobs validation answers 400 naming the field', () => {
    const gen = (extra: object) => ({ capability: 'image.generate', prompt: 'a cat', ...extra });
    const video = (extra: object) => ({ capability: 'video.generate', prompt: 'a clip', ...extra });
    const cases: [string, () => unknown, string | RegExp][] = [
      ['an unknown capability', () => ({ capability: 'image.teleport', prompt: 'x' }), 'capability'],
      ['a missing capability', () => ({ prompt: 'x' }), 'capability'],
      ['image.generate without a prompt', () => ({ capability: 'image.generate' }), 'prompt'],
      ['an empty prompt', () => gen({ prompt: '' }), 'prompt'],
      ['a prompt over 4000 characters', () => gen({ prompt: 'x'.repeat(4001) }), 'prompt'],
      ['width 63', () => gen({ width: 63 }), 'width'],
      ['width 8193', () => gen({ width: 8193 }), 'width'],
      ['width given as the string "1440"', () => gen({ width: '1440' }), 'width'],
      ['height 63', () => gen({ height: 63 }), 'height'],
      ['a non-integer width', () => gen({ width: 100.5 }), 'width'],
      ['scale 101', () => gen({ scale: 101 }), 'scale'],
      ['scale -1', () => gen({ scale: -1 }), 'scale'],
      ['quality "ultra"', () => gen({ quality: 'ultra' }), 'quality'],
      ['force_single given as a string', () => gen({ force_single: 'yes' }), 'force_single'],
      ['settings.duration 3', () => video({ settings: { duration: 3 } }), 'settings.duration'],
      ['settings.duration 16', () => video({ settings: { duration: 16 } }), 'settings.duration'],
      ['settings.duration 4.5', () => video({ settings: { duration: 4.5 } }), 'settings.duration'],
      ['settings.ratio "2:1"', () => video({ settings: { ratio: '2:1' } }), 'settings.ratio'],
      ['settings.resolution "4k"', () => video({ settings: { resolution: '4k' } }), 'settings.resolution'],
      ['resolution "16k" for image.upscale', () => ({ capability: 'image.upscale', imageUrls: ['http://127.0.0.1:9/a.png'], resolution: '16k' }), 'resolution'],
      ['image.inpaint with one image', () => ({ capability: 'image.inpaint', prompt: 'fix', imageUrls: ['http://127.0.0.1:9/a.png'] }), 'imageUrls'],
      ['image.inpaint without a prompt', () => ({ capability: 'image.inpaint', imageUrls: ['http://127.0.0.1:9/a.png', 'http://127.0.0.1:9/m.png'] }), 'prompt'],
      ['image.upscale with no image', () => ({ capability: 'image.upscale' }), /imageUrls|inputUrls|inputAssetIds|materials/],
      ['image.upscale with two images', () => ({ capability: 'image.upscale', imageUrls: ['http://127.0.0.1:9/a.png', 'http://127.0.0.1:9/b.png'] }), 'imageUrls'],
      ['video.generate with neither prompt nor materials', () => ({ capability: 'video.generate' }), /prompt|materials/],
      ['a material with both url and assetId', () => video({ materials: [{ type: 'image', url: 'http://127.0.0.1:9/a.png', assetId: ownAsset.id }] }), 'materials[0]'],
      ['a material with neither url nor assetId', () => video({ materials: [{ type: 'image' }] }), 'materials[0]'],
      ['a material of type "text"', () => video({ materials: [{ type: 'text', url: 'http://127.0.0.1:9/a.png' }] }), 'materials[0].type'],
      ['inputAssetIds naming a missing asset', () => ({ capability: 'image.upscale', inputAssetIds: ['asset_00000000000000000000000000'] }), 'inputAssetIds'],
      ["inputAssetIds naming another client's asset", () => ({ capability: 'image.upscale', inputAssetIds: [foreignAsset.id] }), 'inputAssetIds'],
      ["a material naming another client's asset", () => video({ materials: [{ type: 'image', assetId: foreignAsset.id }] }), 'materials[0]'],
      ['metadata over 4 KiB', () => gen({ metadata: { blob: 'x'.repeat(4100) } }), 'metadata'],
      ['metadata that is not an object', () => gen({ metadata: 'hello' }), 'metadata'],
      ['an unknown top-level field', () => gen({ colour: 'red' }), 'colour'],
      ['width on video.generate', () => video({ width: 1024 }), 'width'],
      ['settings on image.generate', () => gen({ settings: { duration: 5 } }), 'settings'],
      ['resolution on image.generate', () => gen({ resolution: '4k' }), 'resolution'],
      ['engine "nope"', () => gen({ engine: 'nope' }), 'engine'],
      ['webhookUrl "ftp://x"', () => gen({ webhookUrl: 'ftp://x' }), 'webhookUrl'],
      ['webhookUrl that is not a URL', () => gen({ webhookUrl: 'not a url' }), 'webhookUrl'],
      ['imageUrls with a non-http URL', () => ({ capability: 'image.upscale', imageUrls: ['file:///etc/passwd'] }), 'imageUrls'],
    ];
    for (const [what, body, field] of cases) {
      test(`${what} answers 400 naming ${field}`, async () => {
        assertNamesField(await create(body()), field);
      });
    }

    test('a body that is a JSON array answers 400', async () => {
      assertCleanError(await postRaw(stack, '[]'), 400);
    });

    test('none of the refused requests created a job', async () => {
      const res = await stack.api('/api/v1/jobs?limit=200');
      assert.equal(res.status, 200);
      assert.deepEqual(res.body.jobs, []);
    });
  });

  describe('request shape', () => {
    test('malformed JSON answers 400', async () => {
      assertCleanError(await postRaw(stack, '{"capability": "image.generate", "prompt": '), 400);
    });

    test('a text/plain body on POST /jobs answers 400', async () => {
      const res = await stack.api('/api/v1/jobs', {
        method: 'POST',
        body: JSON.stringify({ capability: 'image.generate', prompt: 'x' }),
        headers: { 'content-type': 'text/plain' },
      });
      assertCleanError(res, 400);
    });

    test('a JSON body over 1 MiB answers 413', async () => {
      const res = await create({ capability: 'image.generate', prompt: 'x', metadata: { blob: 'x'.repeat(1024 * 1024 + 10) } });
      assertCleanError(res, 413);
    });

    test('a request without a key answers 401', async () => {
      const res = await callApi(stack.url, '/api/v1/jobs', { method: 'POST', key: '', json: { capability: 'image.generate', prompt: 'x' } });
      assertCleanError(res, 401);
    });

    test('an unknown job answers 404 on get and cancel', async () => {
      assertCleanError(await stack.api('/api/v1/jobs/job_00000000000000000000000000'), 404);
      assertCleanError(await stack.api('/api/v1/jobs/not-even-an-id'), 404);
      assertCleanError(await stack.api('/api/v1/jobs/job_00000000000000000000000000/cancel', { method: 'POST' }), 404);
    });

    test('an unknown asset answers 404 on get and download', async () => {
      assertCleanError(await stack.api('/api/v1/assets/asset_00000000000000000000000000'), 404);
      assertCleanError(await stack.api('/api/v1/assets/asset_00000000000000000000000000/download'), 404);
    });
  });

  describe('idempotency', () => {
    test('the same Idempotency-Key with another body answers 409', async () => {
      const first = await create({ capability: 'image.generate', prompt: 'one' }, { 'idempotency-key': 'conflict-1' });
      assert.equal(first.status, 201, JSON.stringify(first.body));
      const second = await create({ capability: 'image.generate', prompt: 'two' }, { 'idempotency-key': 'conflict-1' });
      assertCleanError(second, 409);
    });

    test('the same key and body with other key order and whitespace answers 200 reused with the same job', async () => {
      const first = await postRaw(stack, '{"capability":"image.generate","prompt":"同一个请求","width":512,"metadata":{"a":1,"b":[1,2]}}', {
        'idempotency-key': 'same-body-1',
      });
      assert.equal(first.status, 201, JSON.stringify(first.body));
      assert.equal(first.body.reused, false);
      const second = await postRaw(stack, '{\n  "metadata": { "b": [1, 2], "a": 1 },\n  "width": 512,\n\t"prompt": "同一个请求",\n  "capability": "image.generate"\n}\n', {
        'idempotency-key': 'same-body-1',
      });
      assert.equal(second.status, 200, JSON.stringify(second.body));
      assert.equal(second.body.reused, true);
      assert.equal(second.body.job.id, first.body.job.id);
    });

    test('racing requests with the same key and body make one job', async () => {
      const json = { capability: 'image.generate', prompt: 'race' };
      const results = await Promise.all(Array.from({ length: 5 }, () => create(json, { 'idempotency-key': 'race-1' })));
      assert.deepEqual(results.map((r) => r.status).sort(), [200, 200, 200, 200, 201]);
      assert.equal(new Set(results.map((r) => r.body.job.id)).size, 1);
      assert.equal(results.filter((r) => r.body.reused === true).length, 4);
    });

    test('the same key used by another client makes that client its own job', async () => {
      const json = { capability: 'image.generate', prompt: 'scoped' };
      const a = await create(json, { 'idempotency-key': 'scoped-1' });
      const b = await stack.api('/api/v1/jobs', { method: 'POST', key: KEY_B, json, headers: { 'idempotency-key': 'scoped-1' } });
      assert.equal(a.status, 201);
      assert.equal(b.status, 201, JSON.stringify(b.body));
      assert.notEqual(a.body.job.id, b.body.job.id);
    });

    test('an Idempotency-Key of 255 characters is accepted', async () => {
      const res = await create({ capability: 'image.generate', prompt: 'long key' }, { 'idempotency-key': 'k'.repeat(255) });
      assert.equal(res.status, 201, JSON.stringify(res.body));
    });

    test('an Idempotency-Key of 256 characters answers 400', async () => {
      const res = await create({ capability: 'image.generate', prompt: 'x' }, { 'idempotency-key': 'k'.repeat(256) });
      assertNamesField(res, 'Idempotency-Key');
    });

    test('an Idempotency-Key with non-ASCII characters answers 400', async () => {
      // Header values travel as bytes: send the UTF-8 bytes of 幂等, and a Latin-1 é.
      for (const key of [Buffer.from('幂等-1', 'utf8').toString('latin1'), 'cl\u00e9-1']) {
        const res = await create({ capability: 'image.generate', prompt: 'x' }, { 'idempotency-key': key });
        assertNamesField(res, 'Idempotency-Key');
      }
    });
  });

  describe('cancel', () => {
    test('cancel of a queued job answers 200 with status cancelled; cancelling again answers 409', async () => {
      const created = await create({ capability: 'image.generate', prompt: 'to cancel' });
      assert.equal(created.status, 201);
      assert.equal(created.body.job.status, 'queued');
      const res = await stack.api(`/api/v1/jobs/${created.body.job.id}/cancel`, { method: 'POST' });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.job.id, created.body.job.id);
      assert.equal(res.body.job.status, 'cancelled');
      const again = await stack.api(`/api/v1/jobs/${created.body.job.id}/cancel`, { method: 'POST' });
      assertCleanError(again, 409);
      const read = await stack.api(`/api/v1/jobs/${created.body.job.id}`);
      assert.equal(read.body.job.status, 'cancelled');
    });
  });

  describe('GET /jobs query', () => {
    for (const [query, param] of [
      ['status=bogus', 'status'],
      ['capability=bogus', 'capability'],
      ['limit=0', 'limit'],
      ['limit=201', 'limit'],
      ['limit=abc', 'limit'],
      ['before=yesterday', 'before'],
    ]) {
      test(`GET /jobs?${query} answers 400 naming ${param}`, async () => {
        assertNamesField(await stack.api(`/api/v1/jobs?${query}`), param);
      });
    }
  });
});

describe('list paging and filters', () => {
  let stack: Stack;
  const created: any[] = [];
  const videos: string[] = [];
  const cancelled: string[] = [];

  before(async () => {
    stack = await startStack({ worker: false });
    for (let i = 0; i < 45; i++) {
      const json = i % 5 === 0 ? { capability: 'video.generate', prompt: `video ${i}` } : { capability: 'image.generate', prompt: `image ${i}` };
      const res = await stack.api('/api/v1/jobs', { method: 'POST', json });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      created.push(res.body.job);
      if (i % 5 === 0) videos.push(res.body.job.id);
    }
    for (const job of created.filter((_, i) => i % 7 === 3)) {
      const res = await stack.api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
      assert.equal(res.status, 200);
      cancelled.push(job.id);
    }
  });
  after(async () => {
    await stack.stop();
  });

  test('pages of 20 walked with nextBefore return every job exactly once, newest first', async () => {
    const seen: string[] = [];
    const sizes: number[] = [];
    let before: string | null = null;
    for (let i = 0; i < 10; i++) {
      const q: string = before === null ? '' : `&before=${encodeURIComponent(before)}`;
      const res = await stack.api(`/api/v1/jobs?limit=20${q}`);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      seen.push(...res.body.jobs.map((j: any) => j.id));
      sizes.push(res.body.jobs.length);
      for (let k = 1; k < res.body.jobs.length; k++) assert.ok(res.body.jobs[k - 1].createdAt >= res.body.jobs[k].createdAt);
      before = res.body.nextBefore;
      if (before === null) break;
    }
    assert.deepEqual(sizes, [20, 20, 5]);
    assert.equal(before, null);
    assert.equal(new Set(seen).size, 45);
    // Created one after another: newest first is exactly the reverse creation order.
    assert.deepEqual(seen, created.map((j) => j.id).reverse());
  });

  test('the default page is 20 jobs', async () => {
    const res = await stack.api('/api/v1/jobs');
    assert.equal(res.body.jobs.length, 20);
    assert.equal(typeof res.body.nextBefore, 'string');
  });

  test('status filters the list', async () => {
    const res = await stack.api('/api/v1/jobs?status=cancelled&limit=200');
    assert.equal(res.status, 200);
    assert.deepEqual(new Set(res.body.jobs.map((j: any) => j.id)), new Set(cancelled));
    assert.ok(res.body.jobs.every((j: any) => j.status === 'cancelled'));
    const queued = await stack.api('/api/v1/jobs?status=queued&limit=200');
    assert.equal(queued.body.jobs.length, 45 - cancelled.length);
    assert.equal((await stack.api('/api/v1/jobs?status=succeeded')).body.jobs.length, 0);
  });

  test('capability filters the list', async () => {
    const res = await stack.api('/api/v1/jobs?capability=video.generate&limit=200');
    assert.equal(res.status, 200);
    assert.deepEqual(
      res.body.jobs.map((j: any) => j.id),
      [...videos].reverse(),
    );
    const both = await stack.api('/api/v1/jobs?capability=video.generate&status=cancelled&limit=200');
    const expected = videos.filter((id) => cancelled.includes(id));
    assert.deepEqual(new Set(both.body.jobs.map((j: any) => j.id)), new Set(expected));
  });
});

describe('cancel and a running worker', () => {
  let server: Stack;
  let worker: Awaited<ReturnType<typeof startStack>> | null = null;

  before(async () => {
    server = await startStack({ worker: false });
  });
  after(async () => {
    await worker?.stop();
    await server.stop();
  });

  test('a cancelled job stays cancelled once a worker runs, and cancel of a finished job answers 409', async () => {
    const doomed = await server.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'never runs', width: 64, height: 64 } });
    assert.equal(doomed.status, 201);
    const cancel = await server.api(`/api/v1/jobs/${doomed.body.job.id}/cancel`, { method: 'POST' });
    assert.equal(cancel.status, 200);
    assert.equal(cancel.body.job.status, 'cancelled');

    // A worker on the same database, as `npm run worker` would be.
    worker = await startStack({ dataDir: server.dataDir, server: false, worker: true });
    const runs = await server.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'runs', width: 64, height: 64 } });
    assert.equal(runs.status, 201);
    const done = await waitForJob(server, runs.body.job.id, undefined, 20_000);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));

    const still = await server.api(`/api/v1/jobs/${doomed.body.job.id}`);
    assert.equal(still.body.job.status, 'cancelled');
    assert.deepEqual(still.body.job.outputAssetIds, []);

    const late = await server.api(`/api/v1/jobs/${done.id}/cancel`, { method: 'POST' });
    assertCleanError(late, 409);
    const after = await server.api(`/api/v1/jobs/${done.id}`);
    assert.equal(after.body.job.status, 'succeeded');
  });
});
