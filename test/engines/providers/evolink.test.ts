import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import sharp from 'sharp';
import { startFakeEvolink, type FakeEvolink } from '../../fakes/evolink.ts';
import { EngineError, type EngineHandle, type PollResult, type RemoteEngine, type RemoteInput, type RemoteRequest } from '../../../src/engines/engine.ts';
import { classifyTaskError, evolinkQuality, evolinkSize, mapEvolinkStatus } from '../../../src/engines/providers/evolink-mapping.ts';
import { createEvolinkEngine, type EvolinkConfig } from '../../../src/engines/providers/evolink.ts';

const API_KEY = 'sk-evo-test';
const signal = new AbortController().signal;

// --- a keyless "signed URL" host for reference images -----------------------------------------
let inputDir: string;
let inputHost: http.Server;
let inputBase: string;
const inputHits: { path: string; authorization?: string }[] = [];

async function imageInput(name: string, width = 512, height = 512, mimeType = 'image/png'): Promise<RemoteInput> {
  const file = path.join(inputDir, name);
  await sharp({ create: { width, height, channels: 3, background: '#336699' } })
    .png()
    .toFile(file);
  return { role: 'image', path: file, mimeType, publicUrl: `${inputBase}/in/${name}?sig=abc`, width, height };
}

before(async () => {
  inputDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'evolink-test-'));
  inputHost = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    inputHits.push({ path: url.pathname, authorization: req.headers.authorization });
    const bytes = url.searchParams.get('sig') === 'abc' ? await fsp.readFile(path.join(inputDir, path.basename(url.pathname))).catch(() => null) : null;
    if (!bytes) res.writeHead(403).end();
    else res.writeHead(200, { 'content-type': 'image/png' }).end(bytes);
  });
  await new Promise<void>((resolve) => inputHost.listen(0, '127.0.0.1', resolve));
  inputBase = `http://127.0.0.1:${(inputHost.address() as AddressInfo).port}`;
});

after(async () => {
  inputHost.closeAllConnections();
  await new Promise((resolve) => inputHost.close(resolve));
  await fsp.rm(inputDir, { recursive: true, force: true });
});

// --- fake and engine ---------------------------------------------------------------------------
let fake: FakeEvolink;
let fakeNow = 0;
const started: FakeEvolink[] = [];

async function startFake(opts: Parameters<typeof startFakeEvolink>[0] = {}): Promise<FakeEvolink> {
  const f = await startFakeEvolink({ now: () => fakeNow, ...opts });
  started.push(f);
  return f;
}

function engineFor(f: FakeEvolink, over: Partial<EvolinkConfig> = {}): RemoteEngine {
  return createEvolinkEngine({ baseUrl: f.baseUrl, apiKey: API_KEY, imageModel: 'gpt-image-1', httpTimeoutMs: 5_000, pollIntervalMs: 10, maxConcurrency: 2, ...over });
}

function imageRequest(over: Partial<RemoteRequest> = {}, params: RemoteRequest['params'] = {}): RemoteRequest {
  return {
    jobId: 'job_evo',
    capability: 'image.generate',
    prompt: 'a lighthouse at dawn, watercolour',
    params: { width: 1024, height: 1024, ...params },
    inputs: [],
    ...over,
  };
}

let keyNo = 0;
const freshOpts = () => ({ signal, idempotencyKey: `job_evo:${keyNo++}` });

function lastCreate(f: FakeEvolink) {
  const creates = f.requests.filter((r) => r.method === 'POST');
  return creates[creates.length - 1]!;
}

async function rejection(promise: Promise<unknown>): Promise<EngineError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof EngineError, `expected an EngineError, got ${String(error)}`);
    return error;
  }
  assert.fail('expected a rejection');
}

async function pollToEnd(engine: RemoteEngine, handle: EngineHandle, stepMs = 40): Promise<{ seen: PollResult[]; result: PollResult }> {
  const seen: PollResult[] = [];
  for (let i = 0; i < 50; i++) {
    const result = await engine.poll(handle, { signal });
    seen.push(result);
    if (!['queued', 'running'].includes(result.status)) return { seen, result };
    fakeNow += stepMs;
  }
  assert.fail('no terminal status after 50 polls');
}

beforeEach(async () => {
  fakeNow = 1_750_000_000_000;
  inputHits.length = 0;
  fake = await startFake({ fetchInputs: true });
});

after(async () => {
  await Promise.all(started.map((f) => f.close()));
});

describe('evolink submit', () => {
  test('sends model, prompt, nearest size, quality, n=1 for force_single, and our Idempotency-Key', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(imageRequest({}, { width: 1920, height: 1080, quality: 'medium', force_single: true }), { signal, idempotencyKey: 'job_evo:0' });
    const req = lastCreate(fake);
    assert.equal(req.path, '/v1/images/generations');
    assert.equal(req.headers.authorization, `Bearer ${API_KEY}`);
    assert.equal(req.headers['idempotency-key'], 'job_evo:0');
    assert.deepEqual(req.body, { model: 'gpt-image-1', prompt: 'a lighthouse at dawn, watercolour', size: '1536x1024', quality: 'medium', n: 1 });
    assert.equal(handle.engine, 'evolink');
    assert.match(handle.taskId, /^task-unified-\d+-[a-z0-9]{8}$/);
    assert.equal(handle.meta?.model, 'gpt-image-1');
  });

  test('auto quality and no force_single leave quality and n out', async () => {
    await engineFor(fake).submit(imageRequest({}, { width: 800, height: 1400, quality: 'auto' }), freshOpts());
    assert.deepEqual(lastCreate(fake).body, { model: 'gpt-image-1', prompt: 'a lighthouse at dawn, watercolour', size: '1024x1536' });
  });

  test('size goes to the nearest supported aspect per model family', () => {
    assert.equal(evolinkSize('gpt-image-1', 1024, 1024), '1024x1024');
    assert.equal(evolinkSize('gpt-image-1', 1200, 1000), '1024x1024');
    assert.equal(evolinkSize('gpt-4o-image', 640, 1280), '1024x1536');
    assert.equal(evolinkSize('gemini-2.5-flash-image', 1920, 1080), '16:9');
    assert.equal(evolinkSize('doubao-seedream-4.0', 2048, 2048), '2048x2048');
    const [w, h] = evolinkSize('doubao-seedream-4.0', 640, 360).split('x').map(Number);
    assert.ok(w! * h! >= 1280 * 720 && Math.abs(w! / h! - 16 / 9) < 0.01);
    assert.equal(evolinkQuality('gpt-image-1', 'high'), 'high');
    assert.equal(evolinkQuality('doubao-seedream-4.0', 'high'), undefined);
  });

  test('other model families are accepted by the fake as sent', async () => {
    await engineFor(fake, { imageModel: 'doubao-seedream-4.0' }).submit(imageRequest({}, { width: 640, height: 360, quality: 'high' }), freshOpts());
    assert.equal(lastCreate(fake).body.quality, undefined);
    await engineFor(fake, { imageModel: 'gemini-2.5-flash-image' }).submit(imageRequest({}, { width: 1080, height: 1920 }), freshOpts());
    assert.equal(lastCreate(fake).body.size, '9:16');
    assert.equal(fake.tasks.size, 2);
  });

  test('reference images go as image_urls, fetched by the provider without a key', async () => {
    const inputs = [await imageInput('a.png'), await imageInput('b.png')];
    await engineFor(fake).submit(imageRequest({ inputs }), freshOpts());
    assert.deepEqual(
      lastCreate(fake).body.image_urls,
      inputs.map((i) => i.publicUrl),
    );
    assert.deepEqual(
      fake.server.inputFetches.map((f) => f.status),
      [200, 200],
    );
    assert.ok(inputHits.every((h) => h.authorization === undefined));
  });

  test('more than five references, or a format it cannot read, is invalid_input before any call', async () => {
    const six = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => imageInput(`r${i}.png`, 64, 64)));
    assert.equal((await rejection(engineFor(fake).submit(imageRequest({ inputs: six }), freshOpts()))).code, 'invalid_input');
    const gif = { ...six[0]!, mimeType: 'image/gif' };
    assert.equal((await rejection(engineFor(fake).submit(imageRequest({ inputs: [gif] }), freshOpts()))).code, 'invalid_input');
    assert.equal((await rejection(engineFor(fake).submit(imageRequest({ prompt: null }), freshOpts()))).code, 'invalid_input');
    assert.equal(fake.submitCount, 0);
  });

  test('a wrong key is provider_auth, permanent', async () => {
    const error = await rejection(engineFor(fake, { apiKey: 'sk-evo-wrong' }).submit(imageRequest(), freshOpts()));
    assert.equal(error.code, 'provider_auth');
    assert.equal(error.options.httpStatus, 401);
    assert.ok(!error.options.retryable && !error.options.rateLimited);
  });

  test('bad_auth: submit and poll are provider_auth', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(imageRequest(), freshOpts());
    fake.setScenario('bad_auth');
    assert.equal((await rejection(engine.poll(handle, { signal }))).code, 'provider_auth');
    assert.equal((await rejection(engine.submit(imageRequest(), freshOpts()))).code, 'provider_auth');
  });
});

describe('evolink idempotency', () => {
  test('the same key and body answer the same task; another body with that key is refused', async () => {
    const engine = engineFor(fake);
    const key = { signal, idempotencyKey: 'job_evo:7' };
    const first = await engine.submit(imageRequest(), key);
    const again = await engine.submit(imageRequest(), key);
    assert.equal(again.taskId, first.taskId);
    assert.equal(fake.tasks.size, 1);
    assert.equal(fake.submitCount, 2);
    const error = await rejection(engine.submit(imageRequest({ prompt: 'something else' }), key));
    assert.equal(error.options.httpStatus, 409);
    assert.equal(error.code, 'provider_error');
    assert.ok(!error.options.retryable);
    const other = await engine.submit(imageRequest(), { signal, idempotencyKey: 'job_evo:8' });
    assert.notEqual(other.taskId, first.taskId);
  });

  test('a 503 retried with the same key makes one task', async () => {
    fake.setScenario('server_error', { times: 1 });
    const engine = engineFor(fake);
    const key = { signal, idempotencyKey: 'job_evo:retry' };
    const error = await rejection(engine.submit(imageRequest(), key));
    assert.equal(error.code, 'provider_error');
    assert.equal(error.options.retryable, true);
    assert.equal(error.options.httpStatus, 503);
    const handle = await engine.submit(imageRequest(), key);
    assert.equal((await engine.submit(imageRequest(), key)).taskId, handle.taskId);
    assert.equal(fake.tasks.size, 1);
  });
});

describe('evolink submit faults', () => {
  test('rate_limit honours Retry-After', async () => {
    fake.setScenario('rate_limit', { times: 1 });
    const error = await rejection(engineFor(fake).submit(imageRequest(), freshOpts()));
    assert.equal(error.code, 'rate_limited');
    assert.equal(error.options.rateLimited, true);
    assert.equal(error.options.retryAfterMs, 1_000);
    assert.equal(error.options.httpStatus, 429);
  });

  test('quota (402) is a permanent quota_exceeded', async () => {
    fake.setScenario('quota', { times: 1 });
    const error = await rejection(engineFor(fake).submit(imageRequest(), freshOpts()));
    assert.equal(error.code, 'quota_exceeded');
    assert.equal(error.options.providerCode, 'insufficient_quota');
    assert.ok(!error.options.retryable && !error.options.rateLimited);
  });

  test('moderation_submit is content_moderation', async () => {
    const error = await rejection(engineFor(fake).submit(imageRequest({ prompt: 'x [fake:moderation_submit]' }), freshOpts()));
    assert.equal(error.code, 'content_moderation');
    assert.ok(!error.options.retryable);
  });

  test('a refused parameter is invalid_input', async () => {
    const error = await rejection(engineFor(fake, { imageModel: 'no-such-model' }).submit(imageRequest(), freshOpts()));
    assert.equal(error.code, 'invalid_input');
    assert.equal(error.options.providerCode, 'invalid_parameters');
  });
});

describe('evolink poll', () => {
  test('pending → processing with progress → completed with URLs that download real PNGs', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(imageRequest({}, { width: 1600, height: 1000 }), freshOpts());
    const { seen, result } = await pollToEnd(engine, handle);
    assert.equal(seen[0]!.status, 'queued');
    assert.equal(seen[0]!.providerStatus, 'pending');
    const running = seen.filter((s) => s.status === 'running');
    assert.ok(running.length >= 2);
    for (const r of running) assert.ok(r.progress! >= 10 && r.progress! <= 90, `progress ${r.progress}`);
    assert.ok(running[running.length - 1]!.progress! > running[0]!.progress!);
    assert.equal(result.status, 'succeeded');
    assert.equal(result.progress, 100);
    assert.equal(result.outputs?.length, 1);
    const res = await fetch(result.outputs![0]!.url!);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'image/png');
    const meta = await sharp(Buffer.from(await res.arrayBuffer())).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 1536, 1024]);
  });

  test('several images come back as several outputs', async () => {
    const many = await startFake({ defaultN: 2 });
    const engine = engineFor(many);
    const { result } = await pollToEnd(engine, await engine.submit(imageRequest(), freshOpts()));
    assert.equal(result.outputs?.length, 2);
    for (const output of result.outputs!) assert.equal((await fetch(output.url!)).status, 200);
    const single = await engine.submit(imageRequest({}, { force_single: true }), freshOpts());
    assert.equal((await pollToEnd(engine, single)).result.outputs?.length, 1);
  });

  test('URLs only in result_data are used', async () => {
    const engine = engineFor(fake);
    const { result } = await pollToEnd(engine, await engine.submit(imageRequest({ prompt: 'x [fake:result_data_only]' }), freshOpts()));
    assert.equal(result.status, 'succeeded');
    assert.equal((await fetch(result.outputs![0]!.url!)).status, 200);
  });

  test('moderation_result ends failed with content_moderation', async () => {
    const engine = engineFor(fake);
    const { result } = await pollToEnd(engine, await engine.submit(imageRequest({ prompt: 'x [fake:moderation_result]' }), freshOpts()));
    assert.equal(result.status, 'failed');
    assert.equal(result.error?.code, 'content_moderation');
    assert.equal(result.error?.providerCode, 'content_policy_violation');
    assert.equal(result.error?.resubmittable, false);
  });

  test('timeout ends failed with provider_timeout, resubmittable', async () => {
    const engine = engineFor(fake);
    const { result } = await pollToEnd(engine, await engine.submit(imageRequest({ prompt: 'x [fake:timeout]' }), freshOpts()));
    assert.equal(result.status, 'failed');
    assert.equal(result.error?.code, 'provider_timeout');
    assert.equal(result.error?.resubmittable, true);
  });

  test('cancelled (failed + request_cancelled) is cancelled', async () => {
    const engine = engineFor(fake);
    const { result } = await pollToEnd(engine, await engine.submit(imageRequest({ prompt: 'x [fake:cancelled]' }), freshOpts()));
    assert.equal(result.status, 'cancelled');
    assert.equal(result.providerStatus, 'failed');
  });

  test('never_finish keeps running at 90%', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(imageRequest({ prompt: 'x [fake:never_finish]' }), freshOpts());
    fakeNow += 10_000;
    const result = await engine.poll(handle, { signal });
    assert.deepEqual([result.status, result.progress], ['running', 90]);
  });

  test('task_lost, an unknown id or a malformed id is a failed provider_task_lost', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(imageRequest({ prompt: 'x [fake:task_lost]' }), freshOpts());
    assert.equal((await engine.poll(handle, { signal })).error?.code, 'provider_task_lost');
    assert.equal((await engine.poll({ ...handle, taskId: 'task-unified-1-zzzzzzzz' }, { signal })).error?.code, 'provider_task_lost');
    const malformed = await engine.poll({ ...handle, taskId: '12345' }, { signal });
    assert.deepEqual([malformed.status, malformed.error?.code, malformed.error?.providerCode], ['failed', 'provider_task_lost', 'invalid_task_id']);
  });

  test('url_expired: success whose URL answers 403', async () => {
    const engine = engineFor(fake);
    const { result } = await pollToEnd(engine, await engine.submit(imageRequest({ prompt: 'x [fake:url_expired]' }), freshOpts()));
    assert.equal(result.status, 'succeeded');
    assert.equal((await fetch(result.outputs![0]!.url!)).status, 403);
  });

  test('real time: a short poll loop reaches success', async () => {
    const live = await startFake({ now: Date.now, queuedMs: 20, runningMs: 40 });
    const engine = engineFor(live);
    const handle = await engine.submit(imageRequest(), freshOpts());
    let result: PollResult | undefined;
    for (let n = 1; n < 100; n++) {
      result = await engine.poll(handle, { signal });
      if (result.status === 'succeeded') break;
      await new Promise((resolve) => setTimeout(resolve, engine.pollDelayMs(n)));
    }
    assert.equal(result?.status, 'succeeded');
  });

  test('status and failed-task code maps', () => {
    assert.deepEqual(mapEvolinkStatus('processing', 42), { status: 'running', progress: 42 });
    assert.deepEqual(mapEvolinkStatus('something_new', undefined), { status: 'running', progress: null });
    assert.deepEqual(classifyTaskError('image_dimension_mismatch'), { code: 'invalid_input', resubmittable: false });
    assert.deepEqual(classifyTaskError('upstream_error'), { code: 'provider_error', resubmittable: true });
    assert.deepEqual(classifyTaskError('quota_exceeded'), { code: 'quota_exceeded', resubmittable: true });
    assert.deepEqual(classifyTaskError('never_heard_of_it'), { code: 'provider_error', resubmittable: false });
  });

  test('poll cadence: 3 s, then 10 s; tests override it', () => {
    const engine = engineFor(fake, { pollIntervalMs: undefined });
    assert.equal(engine.pollDelayMs(1), 3_000);
    assert.equal(engine.pollDelayMs(11), 10_000);
    assert.equal(engineFor(fake).pollDelayMs(3), 10);
  });
});

describe('evolink cancel', () => {
  test('cancel is not supported and calls nothing', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(imageRequest(), freshOpts());
    const before = fake.requests.length;
    assert.equal(await engine.cancel(handle), 'not_supported');
    assert.equal(fake.requests.length, before);
    assert.deepEqual(engine.capabilities, ['image.generate']);
  });
});
