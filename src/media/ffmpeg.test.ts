import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Aborted } from '../lib/abort.ts';
import { ffmpegPath, runFfmpeg } from './ffmpeg.ts';

const dir = mkdtempSync(join(tmpdir(), 'ffmpeg-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function processesMentioning(needle: string): number[] {
  if (!existsSync('/proc')) return [];
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e) && Number(e) !== process.pid)
    .filter((e) => {
      try {
        return readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(needle);
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe('ffmpeg', () => {
  it('resolves the binary once', async () => {
    const a = await ffmpegPath();
    const b = await ffmpegPath();
    assert.equal(a, b);
    assert.ok(statSync(a).isFile());
  });

  it('encodes and reports progress in output seconds', async () => {
    const out = join(dir, 'test.mp4');
    const seen: number[] = [];
    await runFfmpeg(['-f', 'lavfi', '-i', 'testsrc=size=160x120:rate=24', '-t', '2', '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', out], {
      signal: new AbortController().signal,
      totalSeconds: 2,
      onProgress: (s) => seen.push(s),
    });
    assert.ok(statSync(out).size > 1000);
    assert.ok(seen.length > 0);
    assert.ok(seen.every((s, i) => s <= 2 && (i === 0 || s > seen[i - 1])));
    assert.ok(seen.at(-1)! > 1.5, `last progress ${seen.at(-1)}`);
  });

  it('fails with a short message made of the last stderr lines', async () => {
    await assert.rejects(runFfmpeg(['-i', join(dir, 'does-not-exist.mp4'), join(dir, 'x.mp4')], { signal: new AbortController().signal }), (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.match(err.message, /^ffmpeg failed \(exit code \d+\)/);
      assert.match(err.message, /No such file/);
      assert.ok(err.message.length < 2000);
      return true;
    });
  });

  it('kills ffmpeg on abort and rejects with Aborted', async () => {
    const marker = join(dir, 'endless-marker.mkv');
    const controller = new AbortController();
    const run = runFfmpeg(['-re', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=25', '-c:v', 'mpeg4', '-f', 'matroska', marker], { signal: controller.signal });
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(processesMentioning(marker).length > 0, 'ffmpeg is running');
    const t = performance.now();
    controller.abort();
    await assert.rejects(run, (err: unknown) => err instanceof Aborted);
    assert.ok(performance.now() - t < 2000);
    assert.deepEqual(processesMentioning(marker), []);
  });

  it('does not start when the signal has already aborted', async () => {
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(runFfmpeg(['-version'], { signal: controller.signal }), (err: unknown) => err instanceof Aborted);
  });
});
