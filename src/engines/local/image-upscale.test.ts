import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { EngineError, UPSCALE_LONG_SIDE, type EngineRequest, type UpscaleResolution } from '../engine.ts';
import { upscaleSize } from './image-upscale.ts';
import { createLocalEngine } from './index.ts';
import { gradientPng, imageInput, makeContext, type TestContext } from './test-helpers.ts';

const engine = createLocalEngine();
let files: TestContext;
const contexts: TestContext[] = [];
before(async () => {
  files = makeContext('upscale-in-');
  await gradientPng(join(files.workDir, 'landscape.png'), 640, 480);
  await gradientPng(join(files.workDir, 'portrait.png'), 300, 900);
  await gradientPng(join(files.workDir, 'big.png'), 4000, 3000);
});
after(() => {
  files.cleanup();
  contexts.forEach((c) => c.cleanup());
});

function request(inputs: EngineRequest['inputs'], resolution?: UpscaleResolution): EngineRequest {
  return { jobId: 'j', capability: 'image.upscale', prompt: null, params: resolution ? { resolution } : {}, inputs };
}

async function upscale(name: string, resolution?: UpscaleResolution): Promise<{ width: number; height: number; format: string }> {
  const c = makeContext('upscale-');
  contexts.push(c);
  const [out] = await engine.run(request([imageInput(join(files.workDir, name))], resolution), c);
  assert.equal(out.kind, 'image');
  assert.equal(out.mimeType, 'image/png');
  const meta = await sharp(out.path).metadata();
  c.cleanup();
  return { width: meta.width!, height: meta.height!, format: meta.format! };
}

function assertAspect(out: { width: number; height: number }, w: number, h: number): void {
  const expected = out.width >= out.height ? (h * out.width) / w : (w * out.height) / h;
  const actual = out.width >= out.height ? out.height : out.width;
  assert.ok(Math.abs(actual - expected) <= 1, `short side ${actual}, expected ${expected.toFixed(2)} ±1`);
}

describe('image.upscale', () => {
  for (const resolution of ['2k', '4k', '8k'] as const) {
    it(`640×480 → ${resolution}`, async () => {
      const out = await upscale('landscape.png', resolution);
      assert.equal(out.format, 'png');
      assert.equal(out.width, UPSCALE_LONG_SIDE[resolution]);
      assertAspect(out, 640, 480);
    });
    it(`300×900 → ${resolution}`, async () => {
      const out = await upscale('portrait.png', resolution);
      assert.equal(out.height, UPSCALE_LONG_SIDE[resolution]);
      assertAspect(out, 300, 900);
    });
  }

  it('defaults to 4k', async () => {
    const out = await upscale('landscape.png');
    assert.deepEqual([out.width, out.height], [3840, 2880]);
  });

  it('shrinks an input larger than the target (4000×3000 → 2k)', async () => {
    const out = await upscale('big.png', '2k');
    assert.deepEqual([out.width, out.height], [2048, 1536]);
  });

  it('keeps the picture: the upscaled gradient still ramps the same way', async () => {
    const c = makeContext('upscale-');
    contexts.push(c);
    const [out] = await engine.run(request([imageInput(join(files.workDir, 'landscape.png'))], '2k'), c);
    const { data, info } = await sharp(out.path).resize(64, 48).raw().toBuffer({ resolveWithObject: true });
    const px = (x: number, y: number, ch: number): number => data[(y * info.width + x) * info.channels + ch];
    assert.ok(px(60, 24, 0) - px(3, 24, 0) > 150, 'red grows left → right');
    assert.ok(px(32, 45, 1) - px(32, 2, 1) > 150, 'green grows top → bottom');
  });

  it('computes sizes', () => {
    assert.deepEqual(upscaleSize(640, 480, 2048), { width: 2048, height: 1536 });
    assert.deepEqual(upscaleSize(300, 900, 2048), { width: 683, height: 2048 });
    assert.deepEqual(upscaleSize(1, 10000, 2048), { width: 1, height: 2048 });
  });

  it('rejects a missing or unreadable input with invalid_input', async () => {
    const c = makeContext('upscale-');
    contexts.push(c);
    const isInvalid = (err: unknown): boolean => err instanceof EngineError && err.code === 'invalid_input';
    await assert.rejects(engine.run(request([]), c), isInvalid);
    const bad = join(c.workDir, 'bad.jpg');
    await writeFile(bad, Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 0, 1, 2, 3]));
    await assert.rejects(engine.run(request([imageInput(bad)]), c), isInvalid);
  });
});
