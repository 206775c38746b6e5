import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { EngineError, type EngineRequest } from '../../../src/engines/engine.ts';
import { UPSCALE_LONG_SIDE, type UpscaleResolution } from '../../../src/contract/index.ts';
import { Aborted } from '../../../src/lib/abort.ts';
import { upscaleSize } from '../../../src/engines/local/image-upscale.ts';
import { createLocalEngine, prewarmSharp, shutdownSharp } from '../../../src/engines/local/index.ts';
import { pngBomb } from '../../media-fixtures.ts';
import { busySharpPids } from '../../../src/engines/local/sharp-child.ts';
import { gradientPng, imageInput, makeContext, processGone, sleep, waitForBusySharpChild, type TestContext } from '../../local-engine-helpers.ts';

const engine = createLocalEngine();
let files: TestContext;
const contexts: TestContext[] = [];
before(async () => {
  files = makeContext('upscale-in-');
  await gradientPng(join(files.workDir, 'landscape.png'), 640, 480);
  await gradientPng(join(files.workDir, 'portrait.png'), 300, 900);
  await gradientPng(join(files.workDir, 'big.png'), 4000, 3000);
  // Noise compresses badly, so writing its 8k PNG takes seconds.
  await sharp(randomBytes(1200 * 900 * 3), { raw: { width: 1200, height: 900, channels: 3 } })
    .png({ compressionLevel: 1 })
    .toFile(join(files.workDir, 'noise.png'));
});
after(async () => {
  files.cleanup();
  contexts.forEach((c) => c.cleanup());
  await shutdownSharp();
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

  it('refuses an input over the pixel limit (from its header, before decoding) with input_too_large', async () => {
    const c = makeContext('upscale-');
    contexts.push(c);
    const bomb = join(c.workDir, 'bomb.png');
    await writeFile(bomb, pngBomb(30000, 30000));
    const tooLarge =
      (limit: number, width: number, height: number) =>
      (err: unknown): boolean => {
        assert.ok(err instanceof EngineError, String(err));
        assert.equal(err.code, 'input_too_large');
        assert.equal(err.retryable, false);
        assert.match(err.message, new RegExp(`${width}×${height} = ${width * height} pixels, over the ${limit}-pixel limit \\(ZHINIAN_MAX_INPUT_PIXELS\\)`));
        return true;
      };
    const started = performance.now();
    // No limit in the context: sharp's default (= the default ZHINIAN_MAX_INPUT_PIXELS).
    await assert.rejects(engine.run(request([imageInput(bomb)], '2k'), c), tooLarge(268_402_689, 30000, 30000));
    assert.ok(performance.now() - started < 2000, 'refused from the header');
    await assert.rejects(engine.run(request([imageInput(join(files.workDir, 'landscape.png'))], '2k'), { ...c, maxInputPixels: 100_000 }), tooLarge(100_000, 640, 480));
    // At the limit exactly: accepted. The 2048×1536 output is the engine's own and not held to it.
    const [out] = await engine.run(request([imageInput(join(files.workDir, 'landscape.png'))], '2k'), { ...c, maxInputPixels: 640 * 480 });
    assert.equal((await sharp(out.path).metadata()).width, 2048);
  });

  it('rejects an input that fails to decode in the sharp child (truncated PNG) with invalid_input', async () => {
    const c = makeContext('upscale-');
    contexts.push(c);
    const png = await readFile(join(files.workDir, 'landscape.png'));
    const truncated = join(c.workDir, 'truncated.png');
    await writeFile(truncated, png.subarray(0, Math.floor(png.length / 2)));
    await assert.rejects(engine.run(request([imageInput(truncated)], '2k'), c), (err: unknown) => {
      assert.ok(err instanceof EngineError, String(err));
      assert.equal(err.code, 'invalid_input');
      return true;
    });
  });
});

describe('image.upscale cancel', () => {
  it('aborts a running 8k upscale: rejects with Aborted within 2 s and its child process is gone', async () => {
    await prewarmSharp();
    const c = makeContext('upscale-cancel-');
    contexts.push(c);
    const run = engine.run(request([imageInput(join(files.workDir, 'noise.png'))], '8k'), c);
    run.catch(() => undefined);
    await sleep(300);
    const pids = await waitForBusySharpChild();
    assert.equal(pids.length, 1, 'the upscale runs in a sharp child process');
    const abortedAt = performance.now();
    c.controller.abort();
    await assert.rejects(run, (err: unknown) => err instanceof Aborted);
    const took = performance.now() - abortedAt;
    console.log(`upscale cancel: rejected ${Math.round(took)} ms after the abort (child pid ${pids[0]})`);
    assert.ok(took < 2000, `rejected ${Math.round(took)} ms after the abort`);
    assert.ok(processGone(pids[0]), `child ${pids[0]} is gone`);
    assert.deepEqual(busySharpPids(), []);

    // The next upscale still works (on a fresh child).
    const out = await upscale('landscape.png', '2k');
    assert.deepEqual([out.width, out.height], [2048, 1536]);
  });

  it('aborts while the child is still starting', async () => {
    await shutdownSharp();
    const c = makeContext('upscale-cancel-');
    contexts.push(c);
    const run = engine.run(request([imageInput(join(files.workDir, 'noise.png'))], '8k'), c);
    run.catch(() => undefined);
    const pids = await waitForBusySharpChild();
    assert.equal(pids.length, 1);
    const abortedAt = performance.now();
    c.controller.abort();
    await assert.rejects(run, (err: unknown) => err instanceof Aborted);
    assert.ok(performance.now() - abortedAt < 2000);
    assert.ok(processGone(pids[0]));
  });

  it('the child dies with its parent', async () => {
    // A parent that starts an 8k upscale in a sharp child, reports the child's pid, and waits.
    const script = `
      import { runSharpTask, busySharpPids } from ${JSON.stringify(new URL('../../../src/engines/local/sharp-child.ts', import.meta.url).href)};
      const input = ${JSON.stringify(join(files.workDir, 'noise.png'))};
      const output = ${JSON.stringify(join(files.workDir, 'orphan.png'))};
      runSharpTask({ input: { kind: 'file', path: input }, ops: [['resize', 7680, 5760, { kernel: 'lanczos3' }], ['png', { compressionLevel: 9 }]], output: { path: output } }, new AbortController().signal).catch(() => {});
      setTimeout(() => console.log('pid ' + busySharpPids()[0]), 50);
      setInterval(() => {}, 1000);
    `;
    const parent = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const childPid = await new Promise<number>((resolve, reject) => {
      let text = '';
      parent.stdout.setEncoding('utf8');
      parent.stdout.on('data', (chunk: string) => {
        text += chunk;
        const m = /pid (\d+)/.exec(text);
        if (m) resolve(Number(m[1]));
      });
      parent.on('exit', () => reject(new Error(`parent exited early: ${text}`)));
    });
    assert.ok(childPid > 0);
    // Past the child's start-up, into the pipeline.
    await sleep(1000);
    assert.ok(!processGone(childPid), 'the child is working');
    const killedAt = performance.now();
    parent.kill('SIGKILL');
    while (!processGone(childPid) && performance.now() - killedAt < 5000) await sleep(20);
    const took = performance.now() - killedAt;
    console.log(`orphaned sharp child gone ${Math.round(took)} ms after its parent was killed`);
    assert.ok(processGone(childPid), 'the child died with its parent');
    assert.ok(took < 2000, `took ${Math.round(took)} ms`);
  });
});
