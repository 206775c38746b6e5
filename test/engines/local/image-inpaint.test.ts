import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { EngineError, type EngineRequest } from '../../../src/engines/engine.ts';
import { Aborted } from '../../../src/lib/abort.ts';
import { maskBounds } from '../../../src/engines/local/image-inpaint.ts';
import { createLocalEngine, prewarmInpaint, shutdownInpaint, shutdownSharp } from '../../../src/engines/local/index.ts';
import { imageInput, makeContext, processGone, waitForBusySharpChild, type TestContext } from '../../local-engine-helpers.ts';

const engine = createLocalEngine();
const W = 320;
const H = 240;
/** The black "text" block, and the mask rectangle that covers it (a little larger). */
const BLOCK = { x0: 110, y0: 90, x1: 190, y1: 140 };
const MASK = { x0: 106, y0: 86, x1: 194, y1: 144 };

let files: TestContext;
let originalRaw: Buffer;
let gradient: Buffer;
const contexts: TestContext[] = [];

function gradientAt(x: number, y: number, c: number, w = W, h = H): number {
  return c === 0 ? Math.floor((x * 255) / w) : c === 1 ? Math.floor((y * 255) / h) : 128;
}

async function writeOriginal(path: string, w: number, h: number, block: typeof BLOCK, alpha = false): Promise<{ raw: Buffer; clean: Buffer }> {
  const ch = alpha ? 4 : 3;
  const clean = Buffer.alloc(w * h * ch);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * ch;
      for (let c = 0; c < 3; c++) clean[i + c] = gradientAt(x, y, c, w, h);
      if (alpha) clean[i + 3] = 200 + (x % 50);
    }
  }
  const raw = Buffer.from(clean);
  for (let y = block.y0; y < block.y1; y++) {
    for (let x = block.x0; x < block.x1; x++) {
      const i = (y * w + x) * ch;
      raw[i] = raw[i + 1] = raw[i + 2] = 0;
    }
  }
  await sharp(raw, { raw: { width: w, height: h, channels: ch } })
    .png()
    .toFile(path);
  return { raw, clean };
}

async function writeMask(path: string, w: number, h: number, rect: typeof MASK, scale = 1): Promise<void> {
  const mw = Math.round(w * scale);
  const mh = Math.round(h * scale);
  const m = Buffer.alloc(mw * mh);
  for (let y = Math.floor(rect.y0 * scale); y < Math.ceil(rect.y1 * scale); y++) {
    for (let x = Math.floor(rect.x0 * scale); x < Math.ceil(rect.x1 * scale); x++) m[y * mw + x] = 255;
  }
  await sharp(m, { raw: { width: mw, height: mh, channels: 1 } })
    .png()
    .toFile(path);
}

before(async () => {
  files = makeContext('inpaint-in-');
  ({ raw: originalRaw, clean: gradient } = await writeOriginal(join(files.workDir, 'original.png'), W, H, BLOCK));
  await writeMask(join(files.workDir, 'mask.png'), W, H, MASK);
  await writeMask(join(files.workDir, 'mask-half.png'), W, H, MASK, 0.5);
  const started = performance.now();
  const { loadMs } = await prewarmInpaint();
  console.log(`opencv worker ready in ${Math.round(performance.now() - started)} ms (module load ${loadMs} ms)`);
});
after(async () => {
  files.cleanup();
  contexts.forEach((c) => c.cleanup());
  await shutdownInpaint();
  await shutdownSharp();
});

function ctx(): TestContext {
  const c = makeContext('inpaint-');
  contexts.push(c);
  return c;
}

function request(inputs: EngineRequest['inputs']): EngineRequest {
  return { jobId: 'j', capability: 'image.inpaint', prompt: 'remove the text', params: {}, inputs };
}

const inMask = (x: number, y: number): boolean => x >= MASK.x0 && x < MASK.x1 && y >= MASK.y0 && y < MASK.y1;

async function checkResult(path: string): Promise<void> {
  const { data, info } = await sharp(path).raw().toBuffer({ resolveWithObject: true });
  assert.equal(info.width, W);
  assert.equal(info.height, H);
  assert.equal(info.channels, 3);
  let outsideDiffs = 0;
  let insideErr = 0;
  let inside = 0;
  let darkInside = 0;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const i = (y * W + x) * 3;
      if (!inMask(x, y)) {
        for (let c = 0; c < 3; c++) if (data[i + c] !== originalRaw[i + c]) outsideDiffs++;
      } else {
        inside++;
        for (let c = 0; c < 3; c++) insideErr += Math.abs(data[i + c] - gradient[i + c]);
        if (data[i] + data[i + 1] + data[i + 2] < 60) darkInside++;
      }
    }
  }
  assert.equal(outsideDiffs, 0, 'pixels outside the mask are byte-identical');
  const mae = insideErr / (inside * 3);
  console.log(`inpaint mean abs error inside the mask: ${mae.toFixed(2)}`);
  assert.ok(mae < 12, `mean abs error vs the gradient inside the mask: ${mae.toFixed(2)}`);
  assert.equal(darkInside, 0, 'the black block is gone');
}

describe('image.inpaint', () => {
  it('fills the masked block from its surroundings; everything else is untouched', async () => {
    const c = ctx();
    const started = performance.now();
    const [out] = await engine.run(request([imageInput(join(files.workDir, 'original.png')), imageInput(join(files.workDir, 'mask.png'), 'mask')]), c);
    console.log(`inpaint ${W}x${H}: ${Math.round(performance.now() - started)} ms`);
    assert.equal(out.kind, 'image');
    assert.equal(out.mimeType, 'image/png');
    assert.equal(c.progress.at(-1), 100);
    await checkResult(out.path);
  });

  it('takes the mask as a second image input and scales a mask of another size', async () => {
    const c = ctx();
    const [out] = await engine.run(request([imageInput(join(files.workDir, 'original.png')), imageInput(join(files.workDir, 'mask-half.png'))]), c);
    await checkResult(out.path);
  });

  it('keeps an alpha channel, untouched outside the mask', async () => {
    const c = ctx();
    const orig = join(c.workDir, 'alpha.png');
    const { raw } = await writeOriginal(orig, W, H, BLOCK, true);
    const [out] = await engine.run(request([imageInput(orig), imageInput(join(files.workDir, 'mask.png'))]), c);
    const { data, info } = await sharp(out.path).raw().toBuffer({ resolveWithObject: true });
    assert.equal(info.channels, 4);
    let diffs = 0;
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) if (!inMask(x, y)) for (let ch = 0; ch < 4; ch++) if (data[(y * W + x) * 4 + ch] !== raw[(y * W + x) * 4 + ch]) diffs++;
    assert.equal(diffs, 0);
  });

  it('returns the original unchanged for an empty mask', async () => {
    const c = ctx();
    const empty = join(c.workDir, 'empty.png');
    await sharp({ create: { width: W, height: H, channels: 3, background: '#000' } })
      .png()
      .toFile(empty);
    const [out] = await engine.run(request([imageInput(join(files.workDir, 'original.png')), imageInput(empty, 'mask')]), c);
    const data = await sharp(out.path).raw().toBuffer();
    assert.ok(data.equals(originalRaw));
  });

  it('is fast on 1024×1024 with a large hole', async () => {
    const c = ctx();
    const big = { x0: 300, y0: 300, x1: 700, y1: 600 };
    await writeOriginal(join(c.workDir, 'o.png'), 1024, 1024, big);
    await writeMask(join(c.workDir, 'm.png'), 1024, 1024, { x0: 296, y0: 296, x1: 704, y1: 604 });
    const started = performance.now();
    const [out] = await engine.run(request([imageInput(join(c.workDir, 'o.png')), imageInput(join(c.workDir, 'm.png'))]), c);
    const ms = performance.now() - started;
    console.log(`inpaint 1024x1024 (408x308 hole): ${Math.round(ms)} ms`);
    assert.ok(ms < 10_000);
    const meta = await sharp(out.path).metadata();
    assert.deepEqual([meta.width, meta.height], [1024, 1024]);
  });

  it('aborts a running inpaint promptly, and the next one still works', async () => {
    const c = ctx();
    const N = 2048;
    await writeOriginal(join(c.workDir, 'o.png'), N, N, { x0: 200, y0: 200, x1: 1800, y1: 1800 });
    await writeMask(join(c.workDir, 'm.png'), N, N, { x0: 196, y0: 196, x1: 1804, y1: 1804 });
    let abortedAt = 0;
    const onProgress = (p: number): void => {
      c.progress.push(p);
      // 25 = the crop was handed to the OpenCV worker.
      if (p === 25 && !abortedAt) {
        setTimeout(() => {
          abortedAt = performance.now();
          c.controller.abort();
        }, 100);
      }
    };
    const run = engine.run(request([imageInput(join(c.workDir, 'o.png')), imageInput(join(c.workDir, 'm.png'))]), { ...c, onProgress });
    await assert.rejects(run, (err: unknown) => err instanceof Aborted);
    assert.ok(abortedAt > 0, 'the abort happened while inpainting');
    const took = performance.now() - abortedAt;
    console.log(`inpaint cancel: rejected ${Math.round(took)} ms after the abort`);
    assert.ok(took < 2000, `rejected ${Math.round(took)} ms after the abort`);

    const c2 = ctx();
    const [out] = await engine.run(request([imageInput(join(files.workDir, 'original.png')), imageInput(join(files.workDir, 'mask.png'))]), c2);
    await checkResult(out.path);
  });

  it('aborts while the big result is being encoded, and its child process is gone', async () => {
    const c = ctx();
    // Noise compresses badly: encoding 24 Mpx of it takes a while; the hole is small.
    const w = 6000;
    const h = 4000;
    const noise = Buffer.alloc(w * h * 3);
    for (let i = 0, x = 0x9e3779b9; i < noise.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      noise[i] = x & 0xff;
    }
    await sharp(noise, { raw: { width: w, height: h, channels: 3 } })
      .png({ compressionLevel: 0 })
      .toFile(join(c.workDir, 'o.png'));
    await writeMask(join(c.workDir, 'm.png'), w, h, { x0: 100, y0: 100, x1: 140, y1: 140 });
    let encodeStarted: Promise<number[]> | null = null;
    const onProgress = (p: number): void => {
      c.progress.push(p);
      // 85 = the inpainted pixels are about to be encoded.
      if (p === 85) encodeStarted = waitForBusySharpChild();
    };
    const run = engine.run(request([imageInput(join(c.workDir, 'o.png')), imageInput(join(c.workDir, 'm.png'))]), { ...c, onProgress });
    run.catch(() => undefined);
    while (!encodeStarted) await new Promise((r) => setTimeout(r, 5));
    const pids = await (encodeStarted as Promise<number[]>);
    assert.equal(pids.length, 1, 'the encode runs in a sharp child process');
    await new Promise((r) => setTimeout(r, 100));
    const abortedAt = performance.now();
    c.controller.abort();
    await assert.rejects(run, (err: unknown) => err instanceof Aborted);
    const took = performance.now() - abortedAt;
    console.log(`inpaint encode cancel: rejected ${Math.round(took)} ms after the abort`);
    assert.ok(took < 2000, `rejected ${Math.round(took)} ms after the abort`);
    assert.ok(processGone(pids[0]), `child ${pids[0]} is gone`);
  });

  it('rejects missing inputs with invalid_input', async () => {
    const c = ctx();
    const isInvalid = (err: unknown): boolean => err instanceof EngineError && err.code === 'invalid_input';
    await assert.rejects(engine.run(request([]), c), isInvalid);
    await assert.rejects(engine.run(request([imageInput(join(files.workDir, 'original.png'))]), c), isInvalid);
  });

  it('finds the mask bounds', () => {
    const m = new Uint8Array(20 * 10);
    assert.equal(maskBounds(m, 20, 10), null);
    m[3 * 20 + 5] = 255;
    m[7 * 20 + 12] = 255;
    assert.deepEqual(maskBounds(m, 20, 10), { x: 5, y: 3, width: 8, height: 5 });
  });
});
