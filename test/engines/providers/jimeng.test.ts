import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { FAKE_VOLC_ACCESS_KEY_ID, FAKE_VOLC_SECRET_ACCESS_KEY, startFakeJimeng, type FakeJimeng, type FakeJimengOptions } from '../../fakes/jimeng.ts';
import { EngineError, type EngineHandle, type PollResult, type RemoteEngine, type RemoteInput, type RemoteRequest } from '../../../src/engines/engine.ts';
import type { JobParams } from '../../../src/contract/index.ts';
import { Aborted } from '../../../src/lib/abort.ts';
import { createJimengEngine, type JimengConfig } from '../../../src/engines/providers/jimeng.ts';
import { classifyJimengError, fitSize, mapScale, UPSCALE_RESOLUTION } from '../../../src/engines/providers/jimeng-mapping.ts';

/** The fake's clock: tests move it forward instead of sleeping, so status sequences are exact. */
function manualClock() {
  let ms = Date.now();
  return {
    now: () => ms,
    advance: (deltaMs: number) => {
      ms += deltaMs;
    },
  };
}
type Clock = ReturnType<typeof manualClock>;
/** Default phases (queued 50 ms, running 150 ms) on a manual clock. */
const timed = (clock: Clock, extra: FakeJimengOptions = {}): FakeJimengOptions => ({ now: clock.now, ...extra });
const OPTS = () => ({ signal: new AbortController().signal, idempotencyKey: 'job_1:0' });
const dir = mkdtempSync(join(tmpdir(), 'jimeng-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function engineFor(fake: { baseUrl: string }, overrides: Partial<JimengConfig> = {}): RemoteEngine {
  return createJimengEngine({
    baseUrl: fake.baseUrl,
    accessKeyId: FAKE_VOLC_ACCESS_KEY_ID,
    secretAccessKey: FAKE_VOLC_SECRET_ACCESS_KEY,
    region: 'cn-north-1',
    imageReqKey: 'jimeng_t2i_v40',
    httpTimeoutMs: 5000,
    pollIntervalMs: 10,
    maxConcurrency: 2,
    ...overrides,
  });
}

function request(capability: RemoteRequest['capability'], prompt: string | null, params: JobParams = {}, inputs: RemoteInput[] = []): RemoteRequest {
  return { jobId: 'job_1', capability, prompt, params, inputs };
}

function input(path: string, role: RemoteInput['role'] = 'image', publicUrl = 'http://127.0.0.1:9/unused.png'): RemoteInput {
  return { role, path, mimeType: 'image/png', publicUrl, width: null, height: null };
}

async function png(name: string, width: number, height: number, opts: { alpha?: boolean } = {}): Promise<string> {
  const path = join(dir, name);
  const background = opts.alpha ? { r: 200, g: 40, b: 40, alpha: 0.5 } : '#2060a0';
  await sharp({ create: { width, height, channels: opts.alpha ? 4 : 3, background } })
    .png()
    .toFile(path);
  return path;
}

/** Polls until a terminal status, moving the fake's clock 25 ms per poll; records each provider status seen. */
async function pollToEnd(engine: RemoteEngine, handle: EngineHandle, clock: Clock, maxPolls = 40): Promise<{ result: PollResult; seen: string[] }> {
  const seen: string[] = [];
  for (let n = 0; n < maxPolls; n++) {
    const result = await engine.poll(handle, { signal: new AbortController().signal });
    if (seen.at(-1) !== result.providerStatus) seen.push(result.providerStatus);
    if (!['queued', 'running'].includes(result.status)) return { result, seen };
    clock.advance(25);
  }
  throw new Error(`not finished after ${maxPolls} polls: ${seen.join(' → ')}`);
}

async function rejectsWith(promise: Promise<unknown>, expected: { code: string; retryable?: boolean; rateLimited?: boolean; providerCode?: string | number; httpStatus?: number }) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof EngineError, `expected EngineError, got ${String(error)}`);
    assert.equal(error.code, expected.code, error.message);
    assert.equal(Boolean(error.options.retryable), expected.retryable ?? false, 'retryable');
    assert.equal(Boolean(error.options.rateLimited), expected.rateLimited ?? false, 'rateLimited');
    if (expected.providerCode !== undefined) assert.equal(error.options.providerCode, expected.providerCode);
    if (expected.httpStatus !== undefined) assert.equal(error.options.httpStatus, expected.httpStatus);
    return true;
  });
}

function lastBody(fake: FakeJimeng, action = 'CVSync2AsyncSubmitTask'): any {
  return fake.requests.filter((r) => r.query.Action === action).at(-1)?.body;
}

describe('jimeng mapping', () => {
  test('sizes scale by one factor into [1024², 4096²] and keep their ratio', () => {
    assert.deepEqual(fitSize(512, 512), { width: 1024, height: 1024 });
    assert.deepEqual(fitSize(1024, 1536), { width: 1024, height: 1536 });
    assert.deepEqual(fitSize(8192, 8192), { width: 4096, height: 4096 });
    const small = fitSize(640, 360)!;
    assert.ok(small.width * small.height >= 1048576 && Math.abs(small.width / small.height - 16 / 9) < 0.01);
  });

  test('ratios beyond 1:3–3:1 carry widened bounds; beyond 1:16–16:1 they are refused', () => {
    const wide = fitSize(4000, 1000)!;
    assert.deepEqual(wide, { width: 4000, height: 1000, minRatio: 1 / 3, maxRatio: 4 });
    const tall = fitSize(300, 3000)!;
    assert.ok(tall.minRatio! <= tall.width / tall.height && tall.maxRatio === 3);
    assert.equal(fitSize(64, 8192), null);
    assert.equal(fitSize(8192, 512), null);
  });

  test('scale is a two-decimal fraction for 4.0 and an integer 1–100 for 4.6', () => {
    assert.equal(mapScale('jimeng_t2i_v40', 37.4), 0.37);
    assert.equal(mapScale('jimeng_t2i_v40', 0), 0);
    assert.equal(mapScale('jimeng_seedream46_cvtob', 37.6), 38);
    assert.equal(mapScale('jimeng_seedream46_cvtob', 0), 1);
    assert.equal(mapScale('jimeng_t2i_v40', undefined), undefined);
  });

  test('upscale has no 2k: it asks for 4k', () => {
    assert.deepEqual(UPSCALE_RESOLUTION, { '2k': '4k', '4k': '4k', '8k': '8k' });
  });

  test('error codes classify before HTTP statuses', () => {
    assert.equal(classifyJimengError(400, 50412).code, 'content_moderation');
    assert.equal(classifyJimengError(400, 50511).resubmittable, true);
    assert.equal(classifyJimengError(400, 50400).code, 'provider_auth');
    assert.equal(classifyJimengError(400, 50520).code, 'provider_error');
    assert.equal(classifyJimengError(503, undefined).kind, 'retryable');
    assert.equal(classifyJimengError(400, 'SignatureDoesNotMatch').code, 'provider_auth');
  });
});

describe('jimeng engine against the fake: happy paths', () => {
  const clock = manualClock();
  let fake: FakeJimeng;
  let inputHost: http.Server;
  let inputBase = '';
  before(async () => {
    fake = await startFakeJimeng(timed(clock, { fetchInputs: true }));
    // Stands in for our signed public URLs: no credentials needed.
    const refBytes = readFileSync(await png('ref.png', 64, 64));
    inputHost = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'image/png' }).end(refBytes));
    await new Promise<void>((resolve) => inputHost.listen(0, '127.0.0.1', resolve));
    inputBase = `http://127.0.0.1:${(inputHost.address() as AddressInfo).port}`;
  });
  after(async () => {
    await fake.close();
    inputHost.close();
  });

  test('generate sends fitted size, mapped scale, force_single and reference URLs, then yields a real PNG', async () => {
    const engine = engineFor(fake);
    const refs = [input(join(dir, 'ref.png'), 'image', `${inputBase}/a.png?sig=1`), input(join(dir, 'ref.png'), 'image', `${inputBase}/b.png?sig=2`)];
    const handle = await engine.submit(request('image.generate', 'a red fox in snow', { width: 512, height: 768, scale: 37, force_single: true }, refs), OPTS());

    assert.equal(handle.engine, 'jimeng');
    assert.match(handle.taskId, /^\d{19}$/);
    assert.deepEqual(handle.meta, { reqKey: 'jimeng_t2i_v40' });
    assert.deepEqual(lastBody(fake), {
      req_key: 'jimeng_t2i_v40',
      prompt: 'a red fox in snow',
      // 512×768 grown by √(1048576 / 393216) and rounded up: the area just reaches 1024².
      width: 837,
      height: 1255,
      scale: 0.37,
      force_single: true,
      image_urls: [`${inputBase}/a.png?sig=1`, `${inputBase}/b.png?sig=2`],
    });
    assert.deepEqual(
      fake.server.inputFetches.map((f) => f.status),
      [200, 200],
    );

    const { result, seen } = await pollToEnd(engine, handle, clock);
    assert.deepEqual(seen, ['in_queue', 'generating', 'done']);
    assert.equal(result.status, 'succeeded');
    assert.equal(result.outputs?.length, 1);
    const res = await fetch(result.outputs![0]!.url!);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'image/png');
    const meta = await sharp(Buffer.from(await res.arrayBuffer())).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 837, 1255]);
  });

  test('polls ask for URLs with a JSON-encoded req_json and the same req_key and string task_id', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(request('image.generate', 'poll body'), OPTS());
    await engine.poll(handle, { signal: new AbortController().signal });
    assert.deepEqual(lastBody(fake, 'CVSync2AsyncGetResult'), { req_key: 'jimeng_t2i_v40', task_id: handle.taskId, req_json: '{"return_url":true}' });
    const sent = fake.requests.at(-1)!.headers;
    assert.equal(sent['content-type'], 'application/json');
    assert.equal(sent.host, new URL(fake.baseUrl).host);
    assert.match(String(sent['x-date']), /^\d{8}T\d{6}Z$/);
    assert.match(
      String(sent.authorization),
      /^HMAC-SHA256 Credential=AKLTFAKEJIMENGACCESSKEY\/\d{8}\/cn-north-1\/cv\/request, SignedHeaders=content-type;host;x-content-sha256;x-date, Signature=[0-9a-f]{64}$/,
    );
  });

  test('without force_single every returned image becomes an output; no progress is reported', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(request('image.generate', 'two foxes'), OPTS());
    assert.equal('force_single' in lastBody(fake), false);
    assert.equal('width' in lastBody(fake), false);
    const first = await engine.poll(handle, { signal: new AbortController().signal });
    assert.equal(first.progress, null);
    const { result } = await pollToEnd(engine, handle, clock);
    assert.equal(result.outputs?.length, 2);
    assert.ok(result.outputs!.every((o) => o.kind === 'image' && o.url?.includes(`/files/${handle.taskId}/`)));
  });

  test('4.6 takes an integer scale; wide ratios carry min_ratio/max_ratio the fake accepts', async () => {
    const engine = engineFor(fake, { imageReqKey: 'jimeng_seedream46_cvtob' });
    const handle = await engine.submit(request('image.generate', 'panorama', { width: 2000, height: 400, scale: 62.5 }), OPTS());
    const body = lastBody(fake);
    assert.equal(body.req_key, 'jimeng_seedream46_cvtob');
    assert.equal(body.scale, 63);
    assert.ok(body.width * body.height >= 1048576);
    assert.equal(body.max_ratio, Math.ceil((body.width / body.height) * 1e4) / 1e4);
    assert.ok(fake.tasks.has(handle.taskId));
  });

  test('inpaint sends the original as is and the mask as single-channel grey at the original size', async () => {
    const original = await png('orig.png', 300, 200);
    const maskPath = join(dir, 'mask.png');
    // An RGBA mask at half size: white square on transparent.
    const square = await sharp({ create: { width: 50, height: 50, channels: 4, background: '#ffffffff' } })
      .png()
      .toBuffer();
    await sharp({ create: { width: 150, height: 100, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
      .composite([{ input: square, left: 20, top: 20 }])
      .png()
      .toFile(maskPath);
    const engine = engineFor(fake);
    const handle = await engine.submit(request('image.inpaint', '删除', {}, [input(original), input(maskPath, 'mask')]), OPTS());
    assert.equal(handle.meta?.reqKey, 'jimeng_image2image_dream_inpaint');

    const body = lastBody(fake);
    assert.deepEqual(Object.keys(body).sort(), ['binary_data_base64', 'prompt', 'req_key']);
    assert.equal(body.binary_data_base64.length, 2);
    assert.deepEqual(Buffer.from(body.binary_data_base64[0], 'base64'), readFileSync(original));
    const maskPng = Buffer.from(body.binary_data_base64[1], 'base64');
    const maskMeta = await sharp(maskPng).metadata();
    assert.deepEqual([maskMeta.format, maskMeta.width, maskMeta.height, maskMeta.channels], ['png', 300, 200, 1]);
    const mask = await sharp(maskPng).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
    assert.deepEqual(new Set(mask.data), new Set([0, 255]));
    assert.equal(mask.data[50 * 300 + 50], 255); // inside the square, scaled ×2
    assert.equal(mask.data[150 * 300 + 250], 0);

    const { result } = await pollToEnd(engine, handle, clock);
    assert.equal(result.outputs?.length, 1);
    const meta = await sharp(Buffer.from(await (await fetch(result.outputs![0]!.url!)).arrayBuffer())).metadata();
    assert.deepEqual([meta.width, meta.height], [300, 200]);
  });

  test('upscale sends one base64 image and maps 2k to "4k", 8k to "8k"', async () => {
    const source = await png('small.png', 400, 300);
    const engine = engineFor(fake);
    const handle = await engine.submit(request('image.upscale', null, { resolution: '2k' }, [input(source)]), OPTS());
    const body = lastBody(fake);
    assert.deepEqual({ ...body, binary_data_base64: body.binary_data_base64.length }, { req_key: 'jimeng_i2i_seed3_tilesr_cvtob', binary_data_base64: 1, resolution: '4k' });
    await engine.submit(request('image.upscale', null, { resolution: '8k' }, [input(source)]), OPTS());
    assert.equal(lastBody(fake).resolution, '8k');
    await engine.submit(request('image.upscale', null, {}, [input(source)]), OPTS());
    assert.equal(lastBody(fake).resolution, '4k');

    const { result } = await pollToEnd(engine, handle, clock);
    assert.equal(result.status, 'succeeded');
    assert.equal(result.outputs?.length, 1);
  });

  test('cancel is not supported; poll cadence is 2 s then 2.5 s unless overridden', async () => {
    const engine = engineFor(fake);
    assert.equal(await engine.cancel({ engine: 'jimeng', taskId: '1', submittedAt: new Date().toISOString() }), 'not_supported');
    const cadence = engineFor(fake, { pollIntervalMs: undefined });
    assert.deepEqual(
      [1, 2, 3].map((n) => cadence.pollDelayMs(n)),
      [2000, 2500, 2500],
    );
    assert.equal(engine.pollDelayMs(1), 10);
    assert.deepEqual([engine.name, engine.kind, engine.maxConcurrency, [...engine.capabilities]], ['jimeng', 'remote', 2, ['image.generate', 'image.inpaint', 'image.upscale']]);
  });
});

describe('jimeng engine against the fake: refused input', () => {
  let fake: FakeJimeng;
  before(async () => (fake = await startFakeJimeng()));
  after(() => fake.close());

  test('a prompt over 800 characters, an impossible ratio or too many references fail before any call', async () => {
    const engine = engineFor(fake);
    const before = fake.requests.length;
    await rejectsWith(engine.submit(request('image.generate', 'x'.repeat(801)), OPTS()), { code: 'invalid_input' });
    await rejectsWith(engine.submit(request('image.generate', 'x', { width: 64, height: 8192 }), OPTS()), { code: 'invalid_input' });
    const refs = Array.from({ length: 11 }, () => input(join(dir, 'none.png')));
    await rejectsWith(engine.submit(request('image.generate', 'x', {}, refs), OPTS()), { code: 'invalid_input' });
    await rejectsWith(engine.submit(request('image.inpaint', 'x', {}, [input(await png('lonely.png', 10, 10))]), OPTS()), { code: 'invalid_input' });
    assert.equal(fake.requests.length, before);
  });

  test('50215 from the provider is a permanent invalid_input', async () => {
    const engine = engineFor(fake);
    const ref = input(join(dir, 'none.png'), 'image', 'ftp://example.invalid/a.png');
    await rejectsWith(engine.submit(request('image.generate', 'x', {}, [ref]), OPTS()), { code: 'invalid_input', providerCode: 50215, httpStatus: 400 });
  });

  test('a poll the provider refuses with 50215 ends the task as failed', async () => {
    const result = await engineFor(fake).poll({ engine: 'jimeng', taskId: 'not-a-number', submittedAt: new Date().toISOString() }, { signal: new AbortController().signal });
    assert.equal(result.status, 'failed');
    assert.equal(result.error?.code, 'invalid_input');
    assert.equal(result.error?.providerCode, 50215);
  });

  test('an aborted signal stops the submit before it is sent', async () => {
    const controller = new AbortController();
    controller.abort();
    const before = fake.submitCount;
    await assert.rejects(engineFor(fake).submit(request('image.generate', 'x'), { signal: controller.signal, idempotencyKey: 'k' }), Aborted);
    assert.equal(fake.submitCount, before);
  });
});

describe('jimeng engine against the fake: injected faults', () => {
  const clock = manualClock();
  let fake: FakeJimeng;
  before(async () => (fake = await startFakeJimeng(timed(clock))));
  after(() => fake.close());

  test('50429 on submit is rate_limited; the next submit goes through', async () => {
    fake.setScenario('rate_limit', { times: 1 });
    const engine = engineFor(fake);
    const before = fake.submitCount;
    await rejectsWith(engine.submit(request('image.generate', 'x'), OPTS()), { code: 'rate_limited', rateLimited: true, providerCode: 50429, httpStatus: 429 });
    await engine.submit(request('image.generate', 'x'), OPTS());
    assert.equal(fake.submitCount - before, 2);
  });

  test('50430 (concurrency) is rate_limited with a longer wait', async () => {
    fake.setScenario('concurrency', { times: 1 });
    await assert.rejects(engineFor(fake).submit(request('image.generate', 'x'), OPTS()), (error: EngineError) => {
      assert.equal(error.options.rateLimited, true);
      assert.equal(error.options.providerCode, 50430);
      assert.ok(error.options.retryAfterMs! >= 5000);
      return true;
    });
  });

  test('50500 and a non-JSON 502 are retryable', async () => {
    const engine = engineFor(fake);
    await rejectsWith(engine.submit(request('image.generate', 'x [fake:server_error]'), OPTS()), { code: 'provider_error', retryable: true, providerCode: 50500, httpStatus: 500 });
    await rejectsWith(engine.submit(request('image.generate', 'x [fake:bad_gateway]'), OPTS()), { code: 'provider_error', retryable: true, httpStatus: 502 });
  });

  test('moderation on submit is a permanent content_moderation', async () => {
    await rejectsWith(engineFor(fake).submit(request('image.generate', 'x [fake:moderation_submit]'), OPTS()), {
      code: 'content_moderation',
      providerCode: 50412,
      httpStatus: 400,
    });
  });

  test('moderation of the result ends the task: failed, resubmittable', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(request('image.generate', 'x [fake:moderation_result]'), OPTS());
    const { result, seen } = await pollToEnd(engine, handle, clock);
    assert.deepEqual(seen.slice(0, 2), ['in_queue', 'generating']);
    assert.equal(result.status, 'failed');
    assert.deepEqual({ ...result.error, message: undefined }, { code: 'content_moderation', message: undefined, providerCode: 50511, resubmittable: true });
  });

  test('a task the provider expired is expired', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(request('image.generate', 'x [fake:provider_expired]'), OPTS());
    const { result } = await pollToEnd(engine, handle, clock);
    assert.equal(result.status, 'expired');
    assert.equal(result.providerStatus, 'expired');
  });

  test('not_found is a lost task when young and expired past the 12 h retention', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(request('image.generate', 'x [fake:task_lost]'), OPTS());
    const young = await engine.poll(handle, { signal: new AbortController().signal });
    assert.deepEqual([young.status, young.providerStatus, young.error?.code], ['failed', 'not_found', 'provider_task_lost']);
    const old = await engine.poll({ ...handle, submittedAt: new Date(Date.now() - 13 * 3600_000).toISOString() }, { signal: new AbortController().signal });
    assert.equal(old.status, 'expired');
    const unknown = await engine.poll({ ...handle, taskId: '7000000000000000001' }, { signal: new AbortController().signal });
    assert.equal(unknown.error?.code, 'provider_task_lost');
  });

  test('never_finish keeps running long past the running phase', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(request('image.generate', 'x [fake:never_finish]'), OPTS());
    clock.advance(3600_000);
    const result = await engine.poll(handle, { signal: new AbortController().signal });
    assert.deepEqual([result.status, result.providerStatus], ['running', 'generating']);
  });

  test('url_expired: the task succeeds but its URL answers 403', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(request('image.generate', 'x [fake:url_expired]'), OPTS());
    const { result } = await pollToEnd(engine, handle, clock);
    assert.equal(result.status, 'succeeded');
    assert.equal((await fetch(result.outputs![0]!.url!)).status, 403);
  });

  test('429 and 500 on a poll throw (poll again); the next poll carries on', async () => {
    const engine = engineFor(fake);
    for (const [scenario, expected] of [
      ['poll_rate_limit', { code: 'rate_limited', rateLimited: true, providerCode: 50429 }],
      ['poll_server_error', { code: 'provider_error', retryable: true, providerCode: 50500 }],
    ] as const) {
      const handle = await engine.submit(request('image.generate', `x [fake:${scenario}]`), OPTS());
      await rejectsWith(engine.poll(handle, { signal: new AbortController().signal }), expected);
      const { result } = await pollToEnd(engine, handle, clock);
      assert.equal(result.status, 'succeeded');
    }
  });

  test('bad_auth and a wrong secret are a permanent provider_auth', async () => {
    fake.setScenario('bad_auth', { times: 1 });
    await rejectsWith(engineFor(fake).submit(request('image.generate', 'x'), OPTS()), { code: 'provider_auth', providerCode: 'SignatureDoesNotMatch', httpStatus: 401 });
    const wrong = engineFor(fake, { secretAccessKey: 'not-the-secret' });
    await rejectsWith(wrong.submit(request('image.generate', 'x'), OPTS()), { code: 'provider_auth', httpStatus: 401 });
    await rejectsWith(wrong.poll({ engine: 'jimeng', taskId: '7000000000000000001', submittedAt: new Date().toISOString() }, { signal: new AbortController().signal }), {
      code: 'provider_auth',
    });
  });

  test('an unreachable provider is a retryable error', async () => {
    const closed = await startFakeJimeng();
    await closed.close();
    await rejectsWith(engineFor(closed).submit(request('image.generate', 'x'), OPTS()), { code: 'provider_error', retryable: true });
  });
});

describe('jimeng engine against the fake: wire details', () => {
  const clock = manualClock();
  test('an STS token is sent as a signed X-Security-Token; without it the fake refuses', async () => {
    const fake = await startFakeJimeng({ securityToken: 'sts-session-token' });
    try {
      const engine = engineFor(fake, { securityToken: 'sts-session-token' });
      await engine.submit(request('image.generate', 'x'), OPTS());
      const headers = fake.requests.at(-1)!.headers;
      assert.equal(headers['x-security-token'], 'sts-session-token');
      assert.match(String(headers.authorization), /SignedHeaders=content-type;host;x-content-sha256;x-date;x-security-token,/);
      await rejectsWith(engineFor(fake).submit(request('image.generate', 'x'), OPTS()), { code: 'provider_auth', httpStatus: 401 });
    } finally {
      await fake.close();
    }
  });

  test('a task_id sent as a bare 19-digit number is kept exactly', async () => {
    const fake = await startFakeJimeng(timed(clock, { numericTaskIds: true }));
    try {
      const engine = engineFor(fake);
      const handle = await engine.submit(request('image.generate', 'x'), OPTS());
      assert.ok(fake.tasks.has(handle.taskId), `${handle.taskId} not among ${[...fake.tasks.keys()]}`);
      assert.equal((await pollToEnd(engine, handle, clock)).result.status, 'succeeded');
    } finally {
      await fake.close();
    }
  });

  test('base64 results become data outputs', async () => {
    const fake = await startFakeJimeng(timed(clock, { returnBase64: true }));
    try {
      const engine = engineFor(fake);
      const handle = await engine.submit(request('image.generate', 'x', { width: 1024, height: 1024, force_single: true }), OPTS());
      const { result } = await pollToEnd(engine, handle, clock);
      assert.equal(result.outputs?.length, 1);
      const output = result.outputs![0]!;
      assert.equal(output.url, undefined);
      const meta = await sharp(output.data!).metadata();
      assert.deepEqual([meta.format, meta.width, meta.height], ['png', 1024, 1024]);
    } finally {
      await fake.close();
    }
  });
});
