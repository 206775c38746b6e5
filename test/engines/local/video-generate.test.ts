import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ffmpegInfo, probeFile } from '../../../src/media/probe.ts';
import { EngineError, type EngineRequest } from '../../../src/engines/engine.ts';
import type { VideoRatio, VideoResolution } from '../../../src/contract/index.ts';
import { Aborted } from '../../../src/lib/abort.ts';
import { createLocalEngine } from '../../../src/engines/local/index.ts';
import { gradientPng, imageInput, makeContext, processesMentioning, solidPng, topLevelBoxes, type TestContext } from '../../local-engine-helpers.ts';
import { splitFrames } from '../../../src/engines/local/video-generate.ts';

const engine = createLocalEngine();
let files: TestContext;
const contexts: TestContext[] = [];
before(async () => {
  files = makeContext('video-in-');
  await gradientPng(join(files.workDir, 'square.png'), 400, 400);
  await gradientPng(join(files.workDir, 'wide.png'), 1000, 500);
  await solidPng(join(files.workDir, 'small.png'), 64, 48, '#aa3355');
});
after(() => {
  files.cleanup();
  contexts.forEach((c) => c.cleanup());
});

function request(ratio: VideoRatio, resolution: VideoResolution, duration: number, images: string[] = []): EngineRequest {
  return {
    jobId: 'j',
    capability: 'video.generate',
    prompt: 'a paper boat drifting on a pond',
    params: { settings: { ratio, resolution, duration } },
    inputs: images.map((name) => imageInput(join(files.workDir, name))),
  };
}

async function checkVideo(path: string, width: number, height: number, duration: number): Promise<void> {
  const probe = await probeFile(path);
  assert.equal(probe.mimeType, 'video/mp4');
  assert.equal(probe.kind, 'video');
  assert.equal(probe.width, width);
  assert.equal(probe.height, height);
  assert.ok(probe.durationSeconds !== null && Math.abs(probe.durationSeconds - duration) <= 0.1, `duration ${probe.durationSeconds}`);
  const info = await ffmpegInfo(path);
  assert.equal(info.video?.codec, 'h264');
  assert.equal(info.video?.pixFmt, 'yuv420p');
  const boxes = await topLevelBoxes(path);
  assert.ok(boxes.includes('moov') && boxes.includes('mdat'), boxes.join(','));
  assert.ok(boxes.indexOf('moov') < boxes.indexOf('mdat'), `faststart: ${boxes.join(',')}`);
}

async function generate(req: EngineRequest): Promise<{ path: string; progress: number[] }> {
  const c = makeContext('video-');
  contexts.push(c);
  const [out] = await engine.run(req, c);
  assert.equal(out.kind, 'video');
  assert.equal(out.mimeType, 'video/mp4');
  assert.ok(out.path.startsWith(c.workDir));
  return { path: out.path, progress: c.progress };
}

describe('video.generate', () => {
  it('16:9 720p 4 s from the prompt alone → 1280×720', async () => {
    const started = performance.now();
    const { path, progress } = await generate(request('16:9', '720p', 4));
    console.log(`video 16:9 720p 4 s (prompt only): ${Math.round(performance.now() - started)} ms`);
    await checkVideo(path, 1280, 720, 4);
    assert.equal(progress.at(-1), 100);
    assert.ok(
      progress.some((p) => p > 10 && p < 100),
      `progress from ffmpeg: ${progress.join(',')}`,
    );
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i] >= progress[i - 1], 'progress never goes back');
  });

  it('9:16 480p 5 s with one image → 480×854', async () => {
    const { path } = await generate(request('9:16', '480p', 5, ['square.png']));
    await checkVideo(path, 480, 854, 5);
  });

  it('adaptive 480p with a 1000×500 image → 960×480', async () => {
    const { path } = await generate(request('adaptive', '480p', 3, ['wide.png', 'small.png', 'square.png']));
    await checkVideo(path, 960, 480, 3);
  });

  it('splits frames evenly', () => {
    assert.deepEqual(splitFrames(120, 3), [40, 40, 40]);
    assert.deepEqual(splitFrames(121, 3), [41, 40, 40]);
    assert.equal(
      splitFrames(97, 5).reduce((a, b) => a + b, 0),
      97,
    );
  });

  it('aborts a running encode: rejects with Aborted within 2 s and ffmpeg is gone', async () => {
    const c = makeContext('video-cancel-');
    contexts.push(c);
    const run = engine.run(request('16:9', '1080p', 60, ['small.png']), c);
    await new Promise((r) => setTimeout(r, 300));
    // On a loaded machine the scene may still be rendering: give ffmpeg a moment to appear.
    let before = processesMentioning(c.workDir);
    for (let i = 0; i < 60 && before.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      before = processesMentioning(c.workDir);
    }
    const abortedAt = performance.now();
    c.controller.abort();
    await assert.rejects(run, (err: unknown) => err instanceof Aborted);
    const took = performance.now() - abortedAt;
    console.log(`video cancel: rejected ${Math.round(took)} ms after the abort (ffmpeg pids before: ${before.join(',') || 'none'})`);
    assert.ok(took < 2000, `took ${took} ms`);
    assert.ok(before.length > 0, 'ffmpeg was running when aborted');
    assert.deepEqual(processesMentioning(c.workDir), [], 'no ffmpeg left behind');
  });

  it('rejects a bad duration or an unreadable image with invalid_input', async () => {
    const c = makeContext('video-');
    contexts.push(c);
    const isInvalid = (err: unknown): boolean => err instanceof EngineError && err.code === 'invalid_input';
    await assert.rejects(engine.run(request('16:9', '480p', 0), c), isInvalid);
    const bad = { ...request('16:9', '480p', 2), inputs: [imageInput(join(c.workDir, 'missing.png'))] };
    await assert.rejects(engine.run(bad, c), isInvalid);
  });
});
