// @backends sqlite,postgres
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { PollResult, RemoteEngine } from '../src/engines/engine.ts';
import { runFfmpeg } from '../src/media/ffmpeg.ts';
import { gifBomb, jpegBomb, pngBomb, solidImage, svgBomb } from './media-fixtures.ts';
import { openTestDb, startFileServer, startStack, tempDir, waitForJob, type Stack } from './helpers.ts';

/**
 * ZHINIAN_MAX_INPUT_PIXELS through the public API: pixel bombs (tiny files whose headers declare
 * huge images) are refused from the header before anything decodes them — uploads and URL
 * registrations with 413, job inputs and provider results by failing the job at once.
 */

const DEFAULT_LIMIT = 268_402_689;
const over = (w: number, h: number, limit: number) => `${w}×${h} = ${w * h} pixels, over the ${limit}-pixel limit (ZHINIAN_MAX_INPUT_PIXELS)`;

async function upload(stack: Stack, files: { name: string; body: Buffer; type: string }[]) {
  const form = new FormData();
  for (const f of files) form.append('files', new Blob([new Uint8Array(f.body)], { type: f.type }), f.name);
  return stack.api('/api/v1/assets', { method: 'POST', body: form });
}

/** Regular files anywhere under `dir` (directories such as the worker's work dir do not count). */
function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name));
}

/** What a refused upload or registration must leave behind: nothing in tmp, the store or the table. */
async function assertNothingKept(stack: Stack, storedBefore: string[]) {
  assert.deepEqual(filesUnder(path.join(stack.dataDir, 'tmp')), [], 'no temp file left');
  assert.deepEqual(filesUnder(path.join(stack.dataDir, 'assets')).sort(), storedBefore.sort(), 'nothing new in the store');
  const list = await stack.api('/api/v1/assets');
  assert.equal(list.status, 200);
  assert.equal(list.body.assets.length, storedBefore.length, 'no new asset row');
}

function assertTooLarge(res: { status: number; body: any }, ...fragments: string[]) {
  assert.equal(res.status, 413, JSON.stringify(res.body));
  assert.equal(res.body.code, 'too_large');
  for (const fragment of fragments) assert.ok(res.body.error.includes(fragment), `"${res.body.error}" should include "${fragment}"`);
}

async function attemptsOf(stack: Stack, jobId: string): Promise<number> {
  const handle = await openTestDb(stack.dataDir);
  try {
    const row = await handle.db.selectFrom('jobs').select('attempts').where('id', '=', jobId).executeTakeFirstOrThrow();
    return Number(row.attempts);
  } finally {
    await handle.close();
  }
}

/** Creates a job and waits for it; `withinMs`: it must end that fast (no retries, no back-off). */
async function runJob(stack: Stack, body: object, withinMs = 15_000) {
  const started = Date.now();
  const created = await stack.api('/api/v1/jobs', { method: 'POST', json: body });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const job = await waitForJob(stack, created.body.job.id, undefined, withinMs);
  return { job, ms: Date.now() - started };
}

describe('pixel limit: default ZHINIAN_MAX_INPUT_PIXELS (268402689)', () => {
  let stack: Stack;
  let files: Awaited<ReturnType<typeof startFileServer>>;
  const bombs: Record<string, Buffer> = {};

  before(async () => {
    bombs.png = pngBomb(30000, 30000);
    bombs.jpeg = await jpegBomb(30000, 30000);
    bombs.gif = await gifBomb(30000, 30000);
    bombs.svg = svgBomb(30000, 30000);
    files = await startFileServer({
      '/bomb.png': { body: bombs.png, type: 'image/png' },
      '/bomb.jpg': { body: bombs.jpeg, type: 'image/jpeg' },
      '/bomb.gif': { body: bombs.gif, type: 'image/gif' },
      '/bomb.svg': { body: bombs.svg, type: 'image/svg+xml' },
    });
    stack = await startStack();
  });
  after(async () => {
    await stack?.stop();
    await files?.close();
  });

  test('an upload over the limit is 413 naming the limit; no temp file, no row, nothing stored', async () => {
    const cases = [
      { name: 'bomb.png', body: bombs.png, type: 'image/png' },
      { name: 'bomb.jpg', body: bombs.jpeg, type: 'image/jpeg' },
      { name: 'bomb.gif', body: bombs.gif, type: 'image/gif' },
      { name: 'bomb.svg', body: bombs.svg, type: 'image/svg+xml' },
    ];
    for (const bomb of cases) {
      const started = Date.now();
      const res = await upload(stack, [bomb]);
      assertTooLarge(res, over(30000, 30000, DEFAULT_LIMIT), bomb.name);
      assert.ok(Date.now() - started < 3000, `${bomb.name}: refused from the header`);
      await assertNothingKept(stack, []);
    }
    // All or none: a good file uploaded beside a bomb is not kept either.
    const good = await solidImage(64, 64);
    const res = await upload(stack, [{ name: 'good.png', body: good, type: 'image/png' }, cases[0]]);
    assertTooLarge(res, over(30000, 30000, DEFAULT_LIMIT));
    await assertNothingKept(stack, []);
  });

  test('a URL registration over the limit is 413 naming the limit; no temp file, no row, nothing stored', async () => {
    for (const name of ['bomb.png', 'bomb.jpg', 'bomb.gif', 'bomb.svg']) {
      const res = await stack.api('/api/v1/assets', { method: 'POST', json: { url: `${files.base}/${name}` } });
      assertTooLarge(res, 'url', over(30000, 30000, DEFAULT_LIMIT));
      await assertNothingKept(stack, []);
    }
  });

  test('a job whose input URL serves a bomb fails at once with input_too_large (one attempt)', async () => {
    const cases: [object, string][] = [
      [{ capability: 'image.upscale', imageUrls: [`${files.base}/bomb.png`], resolution: '2k' }, 'imageUrls[0]'],
      [{ capability: 'image.upscale', inputUrls: [`${files.base}/bomb.jpg`], resolution: '2k' }, 'inputUrls[0]'],
      [{ capability: 'image.generate', prompt: 'x', width: 64, height: 64, inputUrls: [`${files.base}/bomb.svg`] }, 'inputUrls[0]'],
      [{ capability: 'video.generate', prompt: 'x', materials: [{ type: 'image', url: `${files.base}/bomb.gif` }] }, 'materials[0]'],
    ];
    for (const [body, field] of cases) {
      const { job, ms } = await runJob(stack, body);
      assert.equal(job.status, 'failed', JSON.stringify(job));
      assert.equal(job.error.code, 'input_too_large');
      assert.equal(job.error.message, `${field}: the image is ${over(30000, 30000, DEFAULT_LIMIT)}.`);
      assert.equal(await attemptsOf(stack, job.id), 1, 'no retry');
      assert.ok(ms < 5000, `failed in ${ms} ms`);
    }
    assert.deepEqual(filesUnder(path.join(stack.dataDir, 'tmp')), [], 'work files removed');
  });
});

describe('pixel limit: ZHINIAN_MAX_INPUT_PIXELS=1000000', () => {
  const LIMIT = 1_000_000;
  let stack: Stack;
  let files: Awaited<ReturnType<typeof startFileServer>>;
  let big: Buffer;
  let small: Buffer;
  let bigWebp: Buffer;
  let storedBigId: string;

  before(async () => {
    big = await solidImage(2000, 2000);
    small = await solidImage(1000, 1000);
    bigWebp = await solidImage(2000, 2000, 'webp');
    files = await startFileServer({
      '/big.png': { body: big, type: 'image/png' },
      '/small.png': { body: small, type: 'image/png' },
    });
    // An asset stored while the limit was still the default.
    const dataDir = tempDir();
    const before = await startStack({ dataDir, worker: false });
    const res = await upload(before, [{ name: 'big.png', body: big, type: 'image/png' }]);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    storedBigId = res.body.assets[0].id;
    await before.stop();
    stack = await startStack({ dataDir, env: { ZHINIAN_MAX_INPUT_PIXELS: String(LIMIT) } });
  });
  after(async () => {
    await stack?.stop();
    await files?.close();
  });

  test('uploads and URL registrations: 2000×2000 is refused, 1000×1000 (exactly the limit) accepted', async () => {
    const stored = filesUnder(path.join(stack.dataDir, 'assets'));
    assertTooLarge(await upload(stack, [{ name: 'big.png', body: big, type: 'image/png' }]), 'big.png', over(2000, 2000, LIMIT));
    assertTooLarge(await upload(stack, [{ name: 'big.webp', body: bigWebp, type: 'image/webp' }]), over(2000, 2000, LIMIT));
    assertTooLarge(await stack.api('/api/v1/assets', { method: 'POST', json: { url: `${files.base}/big.png` } }), 'url', over(2000, 2000, LIMIT));
    await assertNothingKept(stack, stored);

    const up = await upload(stack, [{ name: 'small.png', body: small, type: 'image/png' }]);
    assert.equal(up.status, 201, JSON.stringify(up.body));
    assert.deepEqual([up.body.assets[0].width, up.body.assets[0].height], [1000, 1000]);
    const reg = await stack.api('/api/v1/assets', { method: 'POST', json: { url: `${files.base}/small.png` } });
    assert.equal(reg.status, 201, JSON.stringify(reg.body));
  });

  test('job inputs: a 2000×2000 URL fails with input_too_large, 1000×1000 runs; the local 2k output is not held to the limit', async () => {
    const refused = await runJob(stack, { capability: 'image.upscale', imageUrls: [`${files.base}/big.png`], resolution: '2k' });
    assert.equal(refused.job.status, 'failed');
    assert.equal(refused.job.error.code, 'input_too_large');
    assert.equal(refused.job.error.message, `imageUrls[0]: the image is ${over(2000, 2000, LIMIT)}.`);
    assert.equal(await attemptsOf(stack, refused.job.id), 1);

    const ok = await runJob(stack, { capability: 'image.upscale', imageUrls: [`${files.base}/small.png`], resolution: '2k' }, 60_000);
    assert.equal(ok.job.status, 'succeeded', JSON.stringify(ok.job));
    const output = await stack.api(`/api/v1/assets/${ok.job.outputAssetIds[0]}`);
    assert.deepEqual([output.body.asset.width, output.body.asset.height], [2048, 2048]);
  });

  test('videos are not images: a 1280×800 video (1024000 pixels a frame) is stored and used as a job input', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'clip.mp4');
    const signal = new AbortController().signal;
    await runFfmpeg(['-f', 'lavfi', '-i', 'color=c=blue:s=1280x800:rate=10', '-frames:v', '3', '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', file], { signal });
    const up = await upload(stack, [{ name: 'clip.mp4', body: fs.readFileSync(file), type: 'video/mp4' }]);
    fs.rmSync(dir, { recursive: true, force: true });
    assert.equal(up.status, 201, JSON.stringify(up.body));
    assert.deepEqual([up.body.assets[0].kind, up.body.assets[0].width, up.body.assets[0].height], ['video', 1280, 800]);
    const { job } = await runJob(
      stack,
      { capability: 'video.generate', prompt: 'x', settings: { ratio: '16:9', duration: 4, resolution: '480p' }, materials: [{ type: 'video', assetId: up.body.assets[0].id }] },
      60_000,
    );
    assert.equal(job.status, 'succeeded', JSON.stringify(job));
  });

  test('an asset stored before the limit was lowered fails the job with input_too_large', async () => {
    const { job } = await runJob(stack, { capability: 'image.upscale', inputAssetIds: [storedBigId], resolution: '2k' });
    assert.equal(job.status, 'failed');
    assert.equal(job.error.code, 'input_too_large');
    assert.equal(job.error.message, `inputAssetIds[0]: the image is ${over(2000, 2000, LIMIT)}.`);
    assert.equal(await attemptsOf(stack, job.id), 1);
  });
});

describe('pixel limit: provider results', () => {
  let stack: Stack;
  let files: Awaited<ReturnType<typeof startFileServer>>;
  const outputs = new Map<string, () => Promise<NonNullable<PollResult['outputs']>>>();

  /** A remote engine whose task succeeds at once with the result the prompt names. */
  const provider: RemoteEngine = {
    kind: 'remote',
    name: 'bomb-provider',
    capabilities: ['image.generate'],
    maxConcurrency: 4,
    async submit(request) {
      return { engine: 'bomb-provider', taskId: request.prompt ?? '', submittedAt: new Date().toISOString() };
    },
    async poll(handle) {
      return { status: 'succeeded', progress: 100, providerStatus: 'done', outputs: await outputs.get(handle.taskId)!() };
    },
    async cancel() {
      return 'not_supported';
    },
    pollDelayMs: () => 10,
  };

  before(async () => {
    files = await startFileServer({ '/result.gif?sig=1': { body: await gifBomb(30000, 30000), type: 'image/gif' } });
    outputs.set('inline', async () => [{ kind: 'image', data: pngBomb(30000, 30000) }]);
    outputs.set('link', async () => [{ kind: 'image', url: `${files.base}/result.gif?sig=1` }]);
    outputs.set('fine', async () => [{ kind: 'image', data: await solidImage(64, 64) }]);
    stack = await startStack({ engines: [provider] });
  });
  after(async () => {
    await stack?.stop();
    await files?.close();
  });

  test('a result image over the limit fails the job with output_too_large (one attempt, not stored)', async () => {
    for (const prompt of ['inline', 'link']) {
      const { job, ms } = await runJob(stack, { capability: 'image.generate', prompt, width: 64, height: 64 });
      assert.equal(job.status, 'failed', JSON.stringify(job));
      assert.equal(job.error.code, 'output_too_large', JSON.stringify(job.error));
      assert.equal(job.error.message, `The provider's result 1: the image is ${over(30000, 30000, DEFAULT_LIMIT)}.`);
      assert.equal(await attemptsOf(stack, job.id), 1);
      assert.ok(ms < 5000, `failed in ${ms} ms`);
    }
    assert.deepEqual(filesUnder(path.join(stack.dataDir, 'assets')), []);
    const { job } = await runJob(stack, { capability: 'image.generate', prompt: 'fine', width: 64, height: 64 });
    assert.equal(job.status, 'succeeded', JSON.stringify(job));
  });
});
