import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import sharp from 'sharp';
import { startFakeSeedance, type FakeSeedance } from '../../fakes/seedance.ts';
import { EngineError, type EngineHandle, type PollResult, type RemoteEngine, type RemoteInput, type RemoteRequest } from '../../../src/engines/engine.ts';
import { classifySeedanceError, executionExpiresAfter, mapSeedanceStatus, resolveRatio, seedanceModel } from '../../../src/engines/providers/seedance-mapping.ts';
import { createSeedanceEngine, type SeedanceConfig } from '../../../src/engines/providers/seedance.ts';

const API_KEY = 'test-ark-key';
const signal = new AbortController().signal;

// --- a keyless "signed URL" host for inputs, as the asset store would give providers ---------
let inputDir: string;
let inputHost: http.Server;
let inputBase: string;
const inputHits: { path: string; authorization?: string }[] = [];

async function imageInput(name: string, width: number, height: number, mimeType = 'image/png'): Promise<RemoteInput> {
  const file = path.join(inputDir, name);
  await sharp({ create: { width, height, channels: 3, background: '#808080' } })
    .png()
    .toFile(file);
  return { role: 'image', path: file, mimeType, publicUrl: `${inputBase}/in/${name}?sig=abc&expires=9999999999`, width, height };
}

async function mediaInput(role: 'video' | 'audio', name: string): Promise<RemoteInput> {
  const file = path.join(inputDir, name);
  await fsp.writeFile(file, Buffer.alloc(64));
  return { role, path: file, mimeType: role === 'video' ? 'video/mp4' : 'audio/mpeg', publicUrl: `${inputBase}/in/${name}?sig=abc`, width: null, height: null };
}

before(async () => {
  inputDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'seedance-test-'));
  inputHost = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    inputHits.push({ path: url.pathname, authorization: req.headers.authorization });
    const bytes = url.searchParams.get('sig') === 'abc' ? await fsp.readFile(path.join(inputDir, path.basename(url.pathname))).catch(() => null) : null;
    if (!bytes) res.writeHead(403).end();
    else res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(bytes);
  });
  await new Promise<void>((resolve) => inputHost.listen(0, '127.0.0.1', resolve));
  inputBase = `http://127.0.0.1:${(inputHost.address() as AddressInfo).port}`;
});

after(async () => {
  inputHost.closeAllConnections();
  await new Promise((resolve) => inputHost.close(resolve));
  await fsp.rm(inputDir, { recursive: true, force: true });
});

// --- fake, engine and clocks ------------------------------------------------------------------
let fake: FakeSeedance;
/** The fake's time; tests move it instead of sleeping. */
let fakeNow = 0;
/** The engine's time (QuotaExceeded give-up, local expiry check). */
let engineNow = 0;
const started: FakeSeedance[] = [];

async function startFake(opts: Parameters<typeof startFakeSeedance>[0] = {}): Promise<FakeSeedance> {
  const f = await startFakeSeedance({ now: () => fakeNow, ...opts });
  started.push(f);
  return f;
}

function engineFor(f: FakeSeedance, over: Partial<SeedanceConfig> = {}): RemoteEngine {
  return createSeedanceEngine({
    baseUrl: f.baseUrl,
    apiKey: API_KEY,
    videoModel: 'doubao-seedance-2-0-260128',
    jobTimeoutSeconds: 600,
    httpTimeoutMs: 5_000,
    pollIntervalMs: 10,
    maxConcurrency: 2,
    clock: { now: () => engineNow },
    ...over,
  });
}

function videoRequest(over: Partial<RemoteRequest> = {}, settings: Partial<NonNullable<RemoteRequest['params']['settings']>> = {}): RemoteRequest {
  return {
    jobId: 'job_test',
    capability: 'video.generate',
    prompt: 'a paper boat drifting down a rainy street',
    params: { settings: { ratio: 'adaptive', duration: 5, resolution: '720p', ...settings } },
    inputs: [],
    ...over,
  };
}

const opts = { signal, idempotencyKey: 'job_test:0' };

function lastCreate(f: FakeSeedance) {
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

/** Polls with the fake clock jumping ahead each time, until a terminal status. */
async function pollToEnd(engine: RemoteEngine, handle: EngineHandle, stepMs = 60): Promise<{ seen: string[]; result: PollResult }> {
  const seen: string[] = [];
  for (let i = 0; i < 50; i++) {
    const result = await engine.poll(handle, { signal });
    seen.push(result.status);
    if (!['queued', 'running'].includes(result.status)) return { seen, result };
    fakeNow += stepMs;
  }
  assert.fail(`no terminal status after 50 polls: ${seen.join(',')}`);
}

beforeEach(async () => {
  fakeNow = 1_750_000_000_000;
  engineNow = fakeNow;
  inputHits.length = 0;
  fake = await startFake({ fetchInputs: true });
});

after(async () => {
  await Promise.all(started.map((f) => f.close()));
});

describe('seedance submit', () => {
  test('a text-only request sends the model, settings, no watermark and our expiry', async () => {
    const engine = engineFor(fake, { jobTimeoutSeconds: 7200 });
    const handle = await engine.submit(videoRequest({}, { duration: 8, resolution: '1080p', ratio: '9:16' }), opts);
    const req = lastCreate(fake);
    assert.equal(req.path, '/api/v3/contents/generations/tasks');
    assert.equal(req.headers.authorization, `Bearer ${API_KEY}`);
    assert.match(String(req.headers['content-type']), /application\/json/);
    assert.deepEqual(req.body, {
      model: 'doubao-seedance-2-0-260128',
      content: [{ type: 'text', text: 'a paper boat drifting down a rainy street' }],
      ratio: '9:16',
      duration: 8,
      resolution: '1080p',
      watermark: false,
      execution_expires_after: 7200,
      generate_audio: true,
    });
    assert.equal(handle.engine, 'seedance');
    assert.match(handle.taskId, /^cgt-\d{14}-[a-z0-9]{5}$/);
    assert.equal(handle.submittedAt, new Date(engineNow).toISOString());
    assert.equal(handle.meta?.model, 'doubao-seedance-2-0-260128');
  });

  test('execution_expires_after is at least an hour', async () => {
    await engineFor(fake, { jobTimeoutSeconds: 600 }).submit(videoRequest(), opts);
    assert.equal(lastCreate(fake).body.execution_expires_after, 3600);
    assert.equal(executionExpiresAfter(172_800), 172_800);
    assert.equal(executionExpiresAfter(10_000_000), 259_200);
  });

  test('adaptive ratio becomes 16:9 without images', async () => {
    await engineFor(fake).submit(videoRequest(), opts);
    assert.equal(lastCreate(fake).body.ratio, '16:9');
  });

  test('one image is the first frame, keeps adaptive, and the provider fetches it without a key', async () => {
    const image = await imageInput('one.png', 640, 480);
    await engineFor(fake).submit(videoRequest({ prompt: '@图片1 waves at the camera', inputs: [image] }), opts);
    const body = lastCreate(fake).body;
    assert.deepEqual(body.content, [
      { type: 'text', text: '@图片1 waves at the camera' },
      { type: 'image_url', image_url: { url: image.publicUrl }, role: 'first_frame' },
    ]);
    assert.equal(body.ratio, 'adaptive');
    assert.deepEqual(
      fake.server.inputFetches.map((f) => f.status),
      [200],
    );
    assert.deepEqual(inputHits, [{ path: '/in/one.png', authorization: undefined }]);
  });

  test('two images are the first and last frames', async () => {
    const inputs = [await imageInput('a.png', 640, 480), await imageInput('b.png', 640, 480)];
    await engineFor(fake).submit(videoRequest({ inputs }), opts);
    const roles = lastCreate(fake)
      .body.content.filter((c: any) => c.type === 'image_url')
      .map((c: any) => c.role);
    assert.deepEqual(roles, ['first_frame', 'last_frame']);
  });

  test('three images are references, and adaptive becomes the ratio nearest the first image', async () => {
    const inputs = [await imageInput('r1.png', 640, 480), await imageInput('r2.png', 480, 640), await imageInput('r3.png', 500, 500)];
    await engineFor(fake).submit(videoRequest({ inputs }), opts);
    const body = lastCreate(fake).body;
    assert.deepEqual(
      body.content.filter((c: any) => c.type === 'image_url').map((c: any) => c.role),
      ['reference_image', 'reference_image', 'reference_image'],
    );
    assert.equal(body.ratio, '4:3');
    assert.equal(resolveRatio('adaptive', 'reference', { width: 1920, height: 1080 }), '16:9');
    assert.equal(resolveRatio('adaptive', 'reference', { width: null, height: null }), '16:9');
  });

  test('four images on lite-i2v are references; more than four is invalid_input before any call', async () => {
    const inputs = await Promise.all([1, 2, 3, 4, 5].map((i) => imageInput(`m${i}.png`, 640, 640)));
    const engine = engineFor(fake, { videoModel: 'doubao-seedance-1-0-lite-i2v-250428' });
    await engine.submit(videoRequest({ inputs: inputs.slice(0, 4) }, { ratio: '1:1' }), opts);
    assert.equal(lastCreate(fake).body.content.filter((c: any) => c.role === 'reference_image').length, 4);
    assert.equal(lastCreate(fake).body.generate_audio, undefined);
    const before = fake.submitCount;
    const error = await rejection(engine.submit(videoRequest({ inputs }), opts));
    assert.equal(error.code, 'invalid_input');
    assert.ok(!error.options.retryable && !error.options.rateLimited);
    assert.equal(fake.submitCount, before);
  });

  test('references refuse 1080p; a mode the model lacks is invalid_input', async () => {
    const inputs = await Promise.all([1, 2, 3].map((i) => imageInput(`x${i}.png`, 640, 640)));
    assert.equal((await rejection(engineFor(fake).submit(videoRequest({ inputs }, { resolution: '1080p' }), opts))).code, 'invalid_input');
    const pro = engineFor(fake, { videoModel: 'doubao-seedance-1-0-pro-250528' });
    assert.equal((await rejection(pro.submit(videoRequest({ inputs }), opts))).code, 'invalid_input');
    const t2v = engineFor(fake, { videoModel: 'doubao-seedance-1-0-lite-t2v-250428' });
    assert.equal((await rejection(t2v.submit(videoRequest({ inputs: inputs.slice(0, 1) }), opts))).code, 'invalid_input');
    assert.equal(fake.submitCount, 0);
  });

  test('duration outside the configured model range is refused, never clamped', async () => {
    const pro = engineFor(fake, { videoModel: 'doubao-seedance-1-0-pro-250528' });
    const error = await rejection(pro.submit(videoRequest({}, { duration: 15 }), opts));
    assert.equal(error.code, 'invalid_input');
    await pro.submit(videoRequest({}, { duration: 12 }), opts);
    assert.equal(lastCreate(fake).body.duration, 12);
    assert.equal(lastCreate(fake).body.resolution, '720p');
    const fast = engineFor(fake, { videoModel: 'doubao-seedance-2-0-fast-260128' });
    assert.equal((await rejection(fast.submit(videoRequest({}, { resolution: '1080p' }), opts))).code, 'invalid_input');
    assert.equal(fake.submitCount, 1);
  });

  test('an image the provider cannot take is invalid_input', async () => {
    const tiny = await imageInput('tiny.png', 200, 200);
    assert.equal((await rejection(engineFor(fake).submit(videoRequest({ inputs: [tiny] }), opts))).code, 'invalid_input');
    const svg = { ...(await imageInput('pic.png', 640, 480)), mimeType: 'image/svg+xml' };
    assert.equal((await rejection(engineFor(fake).submit(videoRequest({ inputs: [svg] }), opts))).code, 'invalid_input');
  });

  test('an input the provider cannot download is invalid_input, without the URL signature in the message', async () => {
    const image = { ...(await imageInput('gone.png', 640, 480)), publicUrl: `${inputBase}/in/missing.png?sig=abc&token=secret` };
    const error = await rejection(engineFor(fake).submit(videoRequest({ inputs: [image] }), opts));
    assert.equal(error.code, 'invalid_input');
    assert.equal(error.options.providerCode, 'InvalidParameter');
    assert.match(error.message, /missing\.png/);
    assert.doesNotMatch(error.message, /secret|sig=/);
  });

  test('video and audio materials go to 2.0 models as references, and are refused elsewhere', async () => {
    const image = await imageInput('ref.png', 960, 540);
    const video = await mediaInput('video', 'clip.mp4');
    const audio = await mediaInput('audio', 'tune.mp3');
    await engineFor(fake).submit(videoRequest({ inputs: [image, video, audio] }), opts);
    const body = lastCreate(fake).body;
    assert.deepEqual(body.content.slice(1), [
      { type: 'image_url', image_url: { url: image.publicUrl }, role: 'reference_image' },
      { type: 'video_url', video_url: { url: video.publicUrl }, role: 'reference_video' },
      { type: 'audio_url', audio_url: { url: audio.publicUrl }, role: 'reference_audio' },
    ]);
    assert.equal(body.ratio, '16:9');
    const pro = engineFor(fake, { videoModel: 'doubao-seedance-1-5-pro-251215' });
    const error = await rejection(pro.submit(videoRequest({ inputs: [video] }), opts));
    assert.equal(error.code, 'invalid_input');
    assert.equal(fake.submitCount, 1);
  });

  test('an unknown model is passed through and the 404 is provider_auth', async () => {
    assert.equal(seedanceModel('ep-20250101-abcde').family, '');
    const error = await rejection(engineFor(fake, { videoModel: 'doubao-seedance-9-9-260101' }).submit(videoRequest(), opts));
    assert.equal(error.code, 'provider_auth');
    assert.equal(error.options.httpStatus, 404);
    assert.equal(error.options.providerCode, 'InvalidEndpointOrModel.NotFound');
    assert.ok(!error.options.retryable);
  });

  test('a wrong key is provider_auth, permanent', async () => {
    const error = await rejection(engineFor(fake, { apiKey: 'wrong' }).submit(videoRequest(), opts));
    assert.equal(error.code, 'provider_auth');
    assert.equal(error.options.httpStatus, 401);
    assert.equal(error.options.providerCode, 'AuthenticationError');
    assert.ok(!error.options.retryable && !error.options.rateLimited);
    assert.ok(!error.message.includes(API_KEY));
  });

  test('bad_auth: submit and poll are provider_auth', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(videoRequest(), opts);
    fake.setScenario('bad_auth');
    assert.equal((await rejection(engine.poll(handle, { signal }))).code, 'provider_auth');
    assert.equal((await rejection(engine.submit(videoRequest(), opts))).code, 'provider_auth');
  });
});

describe('seedance submit faults', () => {
  test('rate_limit is rate_limited without a made-up wait, then the next submit goes through', async () => {
    fake.setScenario('rate_limit', { times: 1 });
    const engine = engineFor(fake);
    const error = await rejection(engine.submit(videoRequest(), opts));
    assert.equal(error.code, 'rate_limited');
    assert.equal(error.options.rateLimited, true);
    assert.equal(error.options.retryAfterMs, undefined);
    assert.equal(error.options.providerCode, 'RateLimitExceeded.EndpointRPMExceeded');
    assert.equal(error.options.httpStatus, 429);
    await engine.submit(videoRequest(), opts);
    assert.equal(fake.tasks.size, 1);
  });

  test('quota waits 30 s and longer, then after ~15 min becomes a permanent quota_exceeded', async () => {
    fake.setScenario('quota');
    const engine = engineFor(fake);
    const waits: number[] = [];
    for (let i = 0; i < 5; i++) {
      const error = await rejection(engine.submit(videoRequest(), opts));
      assert.equal(error.code, 'quota_exceeded');
      assert.equal(error.options.rateLimited, true);
      assert.equal(error.options.providerCode, 'QuotaExceeded');
      waits.push(error.options.retryAfterMs!);
      engineNow += error.options.retryAfterMs!;
    }
    assert.deepEqual(waits, [30_000, 60_000, 120_000, 300_000, 300_000]);
    engineNow += 15 * 60_000;
    const final = await rejection(engine.submit(videoRequest(), opts));
    assert.equal(final.code, 'quota_exceeded');
    assert.ok(!final.options.rateLimited && !final.options.retryable);
    // Another job starts its own ladder.
    const other = await rejection(engine.submit(videoRequest({ jobId: 'job_other' }), opts));
    assert.equal(other.options.retryAfterMs, 30_000);
  });

  test('SetLimitExceeded is a permanent quota_exceeded', async () => {
    fake.setScenario('set_limit', { times: 1 });
    const error = await rejection(engineFor(fake).submit(videoRequest(), opts));
    assert.equal(error.code, 'quota_exceeded');
    assert.ok(!error.options.rateLimited && !error.options.retryable);
  });

  test('server_error is a retryable provider_error', async () => {
    fake.setScenario('server_error', { times: 1 });
    const error = await rejection(engineFor(fake).submit(videoRequest(), opts));
    assert.equal(error.code, 'provider_error');
    assert.equal(error.options.retryable, true);
    assert.equal(error.options.httpStatus, 500);
    assert.equal(error.options.providerCode, 'InternalServiceError');
  });

  test('moderation_submit is a permanent content_moderation', async () => {
    const error = await rejection(engineFor(fake).submit(videoRequest({ prompt: 'something [fake:moderation_submit]' }), opts));
    assert.equal(error.code, 'content_moderation');
    assert.equal(error.options.providerCode, 'InputTextSensitiveContentDetected');
    assert.ok(!error.options.retryable);
  });

  test('an unreachable base URL is a retryable error', async () => {
    const closed = await startFake();
    await closed.close();
    const error = await rejection(engineFor(closed).submit(videoRequest(), opts));
    assert.equal(error.options.retryable, true);
  });
});

describe('seedance poll', () => {
  test('queued → running → succeeded with a video URL that downloads a real MP4', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(videoRequest(), opts);
    const { seen, result } = await pollToEnd(engine, handle);
    assert.deepEqual(seen, ['queued', 'running', 'running', 'running', 'succeeded']);
    assert.equal(result.providerStatus, 'succeeded');
    assert.equal(result.outputs?.length, 1);
    const output = result.outputs![0]!;
    assert.equal(output.kind, 'video');
    assert.match(output.url!, /X-Tos-Expires=86400/);
    const res = await fetch(output.url!);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'video/mp4');
    const bytes = Buffer.from(await res.arrayBuffer());
    assert.equal(bytes.subarray(4, 8).toString('latin1'), 'ftyp');
  });

  test('real time: a short poll loop reaches success', async () => {
    const live = await startFake({ now: Date.now, queuedMs: 20, runningMs: 40 });
    const engine = engineFor(live, { clock: undefined });
    const handle = await engine.submit(videoRequest(), opts);
    let result: PollResult | undefined;
    for (let n = 1; n < 100; n++) {
      result = await engine.poll(handle, { signal });
      if (result.status === 'succeeded') break;
      await new Promise((resolve) => setTimeout(resolve, engine.pollDelayMs(n)));
    }
    assert.equal(result?.status, 'succeeded');
  });

  test('moderation_result ends failed with content_moderation', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(videoRequest({ prompt: 'x [fake:moderation_result]' }), opts);
    const { result } = await pollToEnd(engine, handle);
    assert.equal(result.status, 'failed');
    assert.equal(result.error?.code, 'content_moderation');
    assert.equal(result.error?.providerCode, 'OutputVideoSensitiveContentDetected');
    assert.equal(result.error?.resubmittable, false);
  });

  test('provider_expired ends expired', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(videoRequest({ prompt: 'x [fake:provider_expired]' }), opts);
    const { result } = await pollToEnd(engine, handle);
    assert.equal(result.status, 'expired');
    assert.equal(result.providerStatus, 'expired');
  });

  test('never_finish runs until the provider expiry (expireAfterMs) passes', async () => {
    const short = await startFake({ expireAfterMs: 1_000 });
    const engine = engineFor(short);
    const handle = await engine.submit(videoRequest({ prompt: 'x [fake:never_finish]' }), opts);
    const { seen, result } = await pollToEnd(engine, handle, 200);
    assert.ok(seen.filter((s) => s === 'running').length >= 3);
    assert.equal(result.status, 'expired');
  });

  test('a task still running long past its expiry is called expired by us', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(videoRequest({ prompt: 'x [fake:never_finish]' }), opts);
    fakeNow += 500;
    assert.equal((await engine.poll(handle, { signal })).status, 'running');
    engineNow += 3600_000 + 11 * 60_000;
    const result = await engine.poll(handle, { signal });
    assert.equal(result.status, 'expired');
    assert.equal(result.error?.code, 'provider_timeout');
  });

  test('task_lost: a 404 on GET is a failed provider_task_lost', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(videoRequest({ prompt: 'x [fake:task_lost]' }), opts);
    const result = await engine.poll(handle, { signal });
    assert.equal(result.status, 'failed');
    assert.equal(result.error?.code, 'provider_task_lost');
    const unknown = await engine.poll({ ...handle, taskId: 'cgt-20250101000000-zzzzz' }, { signal });
    assert.equal(unknown.error?.code, 'provider_task_lost');
  });

  test('url_expired: success whose URL answers 403', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(videoRequest({ prompt: 'x [fake:url_expired]' }), opts);
    const { result } = await pollToEnd(engine, handle);
    assert.equal(result.status, 'succeeded');
    assert.equal((await fetch(result.outputs![0]!.url!)).status, 403);
  });

  test('status words map as documented; unknown ones are running', () => {
    for (const s of ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired'] as const) assert.equal(mapSeedanceStatus(s), s);
    assert.equal(mapSeedanceStatus('paused'), 'running');
  });

  test('error codes match by prefix', () => {
    assert.deepEqual(classifySeedanceError('InputImageSensitiveContentDetected.PolicyViolation'), {
      prefix: 'InputImageSensitiveContentDetected',
      kind: 'permanent',
      code: 'content_moderation',
    });
    assert.equal(classifySeedanceError('AccountOverdueError')?.code, 'quota_exceeded');
    assert.equal(classifySeedanceError('ServerOverloaded')?.kind, 'rate_limited');
    assert.equal(classifySeedanceError('SomethingNew'), undefined);
  });

  test('poll cadence: 4 s for the first minute, then 15 s; tests override it', () => {
    const engine = engineFor(fake, { pollIntervalMs: undefined });
    assert.equal(engine.pollDelayMs(1), 4_000);
    assert.equal(engine.pollDelayMs(15), 4_000);
    assert.equal(engine.pollDelayMs(16), 15_000);
    assert.equal(engineFor(fake).pollDelayMs(40), 10);
  });
});

describe('seedance cancel', () => {
  test('a queued task is cancelled and then polls as cancelled', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(videoRequest(), opts);
    assert.equal(await engine.cancel(handle), 'cancelled');
    assert.ok(fake.requests.some((r) => r.method === 'DELETE'));
    fakeNow += 1_000;
    assert.equal((await engine.poll(handle, { signal })).status, 'cancelled');
    assert.equal(await engine.cancel(handle), 'cancelled');
  });

  test('a running task is too late, and no DELETE is sent', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(videoRequest(), opts);
    fakeNow += 100;
    assert.equal(await engine.cancel(handle), 'too_late');
    assert.equal(fake.requests.filter((r) => r.method === 'DELETE').length, 0);
    assert.equal((await engine.poll(handle, { signal })).status, 'running');
  });

  test('a finished task is too late and stays readable', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(videoRequest(), opts);
    fakeNow += 1_000;
    assert.equal(await engine.cancel(handle), 'too_late');
    assert.equal((await engine.poll(handle, { signal })).status, 'succeeded');
  });

  test('an unknown task is too late', async () => {
    const engine = engineFor(fake);
    assert.equal(await engine.cancel({ engine: 'seedance', taskId: 'cgt-20250101000000-nope0', submittedAt: new Date().toISOString() }), 'too_late');
  });

  test('the fake refuses DELETE on a running task and deletes a finished one', async () => {
    const engine = engineFor(fake);
    const handle = await engine.submit(videoRequest(), opts);
    const url = `${fake.baseUrl}/contents/generations/tasks/${handle.taskId}`;
    const headers = { authorization: `Bearer ${API_KEY}` };
    fakeNow += 100;
    assert.equal((await fetch(url, { method: 'DELETE', headers })).status, 400);
    fakeNow += 1_000;
    assert.equal((await fetch(url, { method: 'DELETE', headers })).status, 200);
    const result = await engine.poll(handle, { signal });
    assert.equal(result.error?.code, 'provider_task_lost');
  });
});
