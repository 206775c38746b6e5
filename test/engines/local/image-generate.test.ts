import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import sharp from 'sharp';
import { EngineError, type EngineRequest } from '../../../src/engines/engine.ts';
import { Aborted } from '../../../src/lib/abort.ts';
import { createLocalEngine, prewarmSharp, shutdownSharp } from '../../../src/engines/local/index.ts';
import { escapeXml, promptSvg, wrapText } from '../../../src/engines/local/render.ts';
import { gradientPng, imageInput, makeContext, processGone, sleep, waitForBusySharpChild, type TestContext } from '../../local-engine-helpers.ts';

const engine = createLocalEngine();
const contexts: TestContext[] = [];
after(async () => {
  contexts.forEach((c) => c.cleanup());
  await shutdownSharp();
});

function ctx(): TestContext {
  const c = makeContext('gen-');
  contexts.push(c);
  return c;
}

function request(prompt: string, width: number, height: number, inputs: EngineRequest['inputs'] = []): EngineRequest {
  return { jobId: 'job_test', capability: 'image.generate', prompt, params: { width, height }, inputs };
}

async function generate(prompt: string, width: number, height: number, inputs: EngineRequest['inputs'] = []): Promise<Buffer> {
  const c = ctx();
  const [out] = await engine.run(request(prompt, width, height, inputs), c);
  assert.equal(out.kind, 'image');
  assert.equal(out.mimeType, 'image/png');
  assert.ok(out.path.startsWith(c.workDir));
  assert.equal(c.progress.at(-1), 100);
  return readFile(out.path);
}

describe('image.generate', () => {
  it('writes a PNG of exactly the requested size', async () => {
    for (const [w, h] of [
      [320, 200],
      [199, 301],
      [64, 64],
    ]) {
      const png = await generate('a lighthouse on a cliff', w, h);
      const meta = await sharp(png).metadata();
      assert.equal(meta.format, 'png');
      assert.equal(meta.width, w);
      assert.equal(meta.height, h);
      assert.equal(meta.channels, 3);
    }
  });

  it('is deterministic per prompt and differs between prompts', async () => {
    const a1 = await generate('a red fox in the snow', 256, 192);
    const a2 = await generate('a red fox in the snow', 256, 192);
    const b = await generate('a blue whale in the deep sea', 256, 192);
    assert.ok(a1.equals(a2), 'same prompt + size → identical bytes');
    assert.ok(!a1.equals(b), 'different prompt → different image');
    // Really different pixels, not just metadata.
    const [ra, rb] = await Promise.all([sharp(a1).raw().toBuffer(), sharp(b).raw().toBuffer()]);
    let diff = 0;
    for (let i = 0; i < ra.length; i++) diff += Math.abs(ra[i] - rb[i]);
    assert.ok(diff / ra.length > 10, `mean pixel difference ${diff / ra.length}`);
  });

  it('uses a reference image: the output differs with one and still has the requested size', async () => {
    const c = ctx();
    const ref = join(c.workDir, 'ref.png');
    await gradientPng(ref, 400, 300);
    const plain = await generate('a castle', 240, 240);
    const withRef = await generate('a castle', 240, 240, [imageInput(ref)]);
    assert.ok(!plain.equals(withRef));
    const meta = await sharp(withRef).metadata();
    assert.equal(meta.width, 240);
    assert.equal(meta.height, 240);
    const { data } = await sharp(withRef).raw().toBuffer({ resolveWithObject: true });
    const { data: plainData } = await sharp(plain).raw().toBuffer({ resolveWithObject: true });
    let refDiff = 0;
    for (let i = 0; i < data.length; i++) refDiff += Math.abs(data[i] - plainData[i]);
    assert.ok(refDiff / data.length > 5, `mean difference ${refDiff / data.length}`);
  });

  it('defaults to 1024×1024 and accepts a null prompt', async () => {
    const c = ctx();
    const [out] = await engine.run({ jobId: 'j', capability: 'image.generate', prompt: null, params: {}, inputs: [] }, c);
    const meta = await sharp(out.path).metadata();
    assert.equal(meta.width, 1024);
    assert.equal(meta.height, 1024);
  });

  it('renders 8192×8192 without trouble', async () => {
    const c = ctx();
    const started = performance.now();
    const [out] = await engine.run(request('a very large mural of a city at night', 8192, 8192), c);
    const meta = await sharp(out.path).metadata();
    assert.equal(meta.width, 8192);
    assert.equal(meta.height, 8192);
    assert.ok(performance.now() - started < 20_000);
  });

  it('aborts an 8192×8192 render: rejects with Aborted within 2 s and its child process is gone', async () => {
    await prewarmSharp();
    const c = ctx();
    const run = engine.run(request('a very large mural of a forest at dawn', 8192, 8192), c);
    run.catch(() => undefined);
    await sleep(300);
    const pids = await waitForBusySharpChild();
    assert.equal(pids.length, 1, 'the render runs in a sharp child process');
    const abortedAt = performance.now();
    c.controller.abort();
    await assert.rejects(run, (err: unknown) => err instanceof Aborted);
    const took = performance.now() - abortedAt;
    console.log(`generate 8192² cancel: rejected ${Math.round(took)} ms after the abort`);
    assert.ok(took < 2000, `rejected ${Math.round(took)} ms after the abort`);
    assert.ok(processGone(pids[0]), `child ${pids[0]} is gone`);
  });

  it('rejects an unreadable reference image as invalid_input', async () => {
    const c = ctx();
    const bad = join(c.workDir, 'bad.png');
    await import('node:fs/promises').then((fs) => fs.writeFile(bad, 'not an image'));
    await assert.rejects(engine.run(request('x', 64, 64, [imageInput(bad)]), c), (err: unknown) => {
      assert.ok(err instanceof EngineError);
      assert.equal(err.code, 'invalid_input');
      assert.notEqual(err.options.retryable, true);
      return true;
    });
  });
});

describe('render helpers', () => {
  it('escapes XML and drops characters XML cannot hold', () => {
    assert.equal(escapeXml(`<a href="x">&'</a>\u0001`), '&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;');
    const svg = promptSvg('<script>alert("x")</script> & more \u0007', 100, 100);
    assert.ok(!svg.includes('<script>'));
    assert.ok(svg.includes('&lt;script&gt;'));
  });

  it('wraps to at most the given lines, breaking CJK runs and cutting with an ellipsis', () => {
    const lines = wrapText('one two three four five six seven eight nine ten eleven twelve', 8, 3);
    assert.ok(lines.length <= 3);
    assert.ok(lines.at(-1)!.endsWith('…'));
    const cjk = wrapText('一只猫坐在屋顶上看着月亮和星星', 5, 4);
    assert.ok(cjk.length > 1);
    for (const l of cjk) assert.ok([...l.replace('…', '')].length <= 5);
    assert.deepEqual(wrapText('short', 20, 4), ['short']);
  });
});
