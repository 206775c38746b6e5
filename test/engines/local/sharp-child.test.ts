import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Aborted } from '../../../src/lib/abort.ts';
import { decodeError } from '../../../src/engines/local/inputs.ts';
import { promptRenderTask } from '../../../src/engines/local/render.ts';
import { busySharpPids, prewarmSharp, runSharpTask, shutdownSharp, type SharpTask } from '../../../src/engines/local/sharp-child.ts';
import { gradientPng, makeContext, processGone, type TestContext } from '../../local-engine-helpers.ts';

let c: TestContext;
const signal = new AbortController().signal;
before(async () => {
  c = makeContext('sharp-child-');
  await gradientPng(join(c.workDir, 'in.png'), 300, 200);
  const started = performance.now();
  const { loadMs } = await prewarmSharp();
  console.log(`sharp child ready in ${Math.round(performance.now() - started)} ms (sharp load ${loadMs} ms)`);
});
after(async () => {
  c.cleanup();
  await shutdownSharp();
});

describe('runSharpTask', () => {
  it("keeps sharp's limitInputPixels on for file inputs: the decode itself is held to the limit", async () => {
    const input = { kind: 'file' as const, path: join(c.workDir, 'in.png') };
    const decode = (limitInputPixels: number | boolean): SharpTask => ({ input, inputOptions: { limitInputPixels }, ops: [['rotate']], output: { raw: true } });
    for (const inProcess of [false, true]) {
      // 300×200 = 60000 pixels
      const err = await runSharpTask(decode(59_999), signal, { inProcess, scratchDir: c.workDir }).then(
        () => assert.fail('decoded over the limit'),
        (e: unknown) => e,
      );
      assert.match(String(err), /exceeds pixel limit/);
      const mapped = decodeError(err, 'input image');
      assert.equal((mapped as { code?: string }).code, 'input_too_large');
      assert.equal((await runSharpTask(decode(60_000), signal, { inProcess, scratchDir: c.workDir })).width, 300);
      await assert.rejects(runSharpTask(decode(false), signal, { inProcess, scratchDir: c.workDir }), /limitInputPixels may not be turned off/);
    }
  });

  it('gives the same bytes in the child and in this process', async () => {
    const tasks: [string, (out: string) => SharpTask][] = [
      ['render', (out) => promptRenderTask({ prompt: 'a quiet harbour at night', width: 320, height: 240, compressionLevel: 4 }, { path: out })],
      [
        'resize',
        (out) => ({
          input: { kind: 'file', path: join(c.workDir, 'in.png') },
          ops: [
            ['rotate'],
            ['resize', 600, 400, { fit: 'fill', kernel: 'lanczos3' }],
            ['sharpen', { sigma: 0.8, m1: 0.6, m2: 1.5 }],
            ['png', { compressionLevel: 3, adaptiveFiltering: false }],
          ],
          output: { path: out },
        }),
      ],
    ];
    for (const [name, task] of tasks) {
      const a = join(c.workDir, `${name}-child.png`);
      const b = join(c.workDir, `${name}-here.png`);
      await runSharpTask(task(a), signal);
      await runSharpTask(task(b), signal, { inProcess: true });
      assert.ok((await readFile(a)).equals(await readFile(b)), `${name}: identical bytes`);
    }
  });

  it('moves raw pixels both ways through the scratch directory, and cleans up', async () => {
    const scratch = makeContext('sharp-scratch-');
    try {
      const decode: SharpTask = { input: { kind: 'file', path: join(c.workDir, 'in.png') }, ops: [['rotate']], output: { raw: true } };
      const child = await runSharpTask(decode, signal, { scratchDir: scratch.workDir });
      const here = await runSharpTask(decode, signal, { inProcess: true });
      assert.deepEqual([child.width, child.height, child.channels], [300, 200, 3]);
      assert.ok(child.data && here.data && child.data.equals(here.data));

      const encode = (path: string): SharpTask => ({
        input: { kind: 'raw', data: child.data!, width: 300, height: 200, channels: 3 },
        ops: [['png', { compressionLevel: 4, adaptiveFiltering: false }]],
        output: { path },
      });
      await runSharpTask(encode(join(c.workDir, 'enc-child.png')), signal, { scratchDir: scratch.workDir });
      await runSharpTask(encode(join(c.workDir, 'enc-here.png')), signal, { inProcess: true });
      assert.ok((await readFile(join(c.workDir, 'enc-child.png'))).equals(await readFile(join(c.workDir, 'enc-here.png'))));
      assert.deepEqual(await readdir(scratch.workDir), [], 'no raw files left behind');
    } finally {
      scratch.cleanup();
    }
  });

  it("rejects with sharp's message when the pipeline fails, and the next task still runs", async () => {
    await assert.rejects(
      runSharpTask({ input: { kind: 'file', path: join(c.workDir, 'missing.png') }, ops: [['png', {}]], output: { path: join(c.workDir, 'x.png') } }, signal),
      (err: unknown) => err instanceof Error && /missing\.png|does not exist|unsupported/i.test(err.message),
    );
    const info = await runSharpTask({ input: { kind: 'file', path: join(c.workDir, 'in.png') }, ops: [['png', {}]], output: { path: join(c.workDir, 'y.png') } }, signal);
    assert.deepEqual([info.width, info.height], [300, 200]);
  });

  it('reuses a warm child, and a cancel kills it', async () => {
    await prewarmSharp();
    const render = (n: number, s: AbortSignal): Promise<unknown> =>
      runSharpTask(promptRenderTask({ prompt: `warm ${n}`, width: 4096, height: 4096, compressionLevel: 9 }, { path: join(c.workDir, `warm-${n}.png`) }), s);
    const first = render(1, signal);
    const [pid] = busySharpPids();
    await first;
    const ac = new AbortController();
    const second = render(2, ac.signal);
    assert.deepEqual(busySharpPids(), [pid], 'the same warm child takes the next task');
    setTimeout(() => ac.abort(), 100);
    await assert.rejects(second, (err: unknown) => err instanceof Aborted);
    assert.ok(processGone(pid));
    assert.deepEqual(busySharpPids(), []);
  });

  it('rejects at once when the signal has already aborted', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(runSharpTask(promptRenderTask({ prompt: 'x', width: 8, height: 8 }, { path: join(c.workDir, 'z.png') }), ac.signal), Aborted);
    assert.deepEqual(busySharpPids(), []);
  });
});
