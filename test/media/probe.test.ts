import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { runFfmpeg } from '../../src/media/ffmpeg.ts';
import { DEFAULT_MAX_INPUT_PIXELS, parseFfmpegInfo, PixelLimitExceeded, probeFile } from '../../src/media/probe.ts';
import { bmpBomb, gifBomb, jpegBomb, pngBomb, solidImage, svgBomb } from '../media-fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'probe-test-'));
const signal = new AbortController().signal;
const p = (name: string): string => join(dir, name);

before(async () => {
  await sharp({ create: { width: 300, height: 200, channels: 3, background: '#808080' } })
    .png()
    .toFile(p('a.png'));
  await sharp({ create: { width: 300, height: 200, channels: 3, background: '#808080' } })
    .jpeg()
    .withMetadata({ orientation: 6 })
    .toFile(p('rotated.jpg'));
  await runFfmpeg(['-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=24', '-t', '2', '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', p('v.mp4')], { signal });
  // Rotation metadata sticks when remuxing (stream copy).
  await runFfmpeg(['-i', p('v.mp4'), '-c', 'copy', '-metadata:s:v:0', 'rotate=90', p('rot.mp4')], { signal });
  await runFfmpeg(['-f', 'lavfi', '-i', 'sine=frequency=440:duration=1.5', p('a.wav')], { signal });
  await writeFile(p('notes.txt'), 'just some text\n');
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A 200 MB sparse file that starts with `head`. */
async function bigFile(name: string, head: Buffer): Promise<string> {
  const fh = await open(p(name), 'w');
  await fh.write(head, 0, head.length, 0);
  await fh.truncate(200 * 1024 * 1024);
  await fh.close();
  return p(name);
}

describe('probeFile', () => {
  it('reads an image size from its header', async () => {
    assert.deepEqual(await probeFile(p('a.png')), { mimeType: 'image/png', kind: 'image', width: 300, height: 200, durationSeconds: null });
  });

  it('honours EXIF orientation', async () => {
    const r = await probeFile(p('rotated.jpg'));
    assert.equal(r.mimeType, 'image/jpeg');
    assert.deepEqual([r.width, r.height], [200, 300]);
  });

  it('reads video size and duration', async () => {
    const r = await probeFile(p('v.mp4'));
    assert.equal(r.mimeType, 'video/mp4');
    assert.equal(r.kind, 'video');
    assert.deepEqual([r.width, r.height], [320, 240]);
    assert.ok(Math.abs(r.durationSeconds! - 2) < 0.1);
  });

  it('swaps width and height of a video rotated by 90°', async () => {
    const r = await probeFile(p('rot.mp4'));
    assert.deepEqual([r.width, r.height], [240, 320]);
  });

  it('reads audio duration', async () => {
    const r = await probeFile(p('a.wav'));
    assert.equal(r.kind, 'audio');
    assert.match(r.mimeType, /^audio\//);
    assert.equal(r.width, null);
    assert.ok(Math.abs(r.durationSeconds! - 1.5) < 0.1);
  });

  it('calls unknown content application/octet-stream', async () => {
    assert.deepEqual(await probeFile(p('notes.txt')), { mimeType: 'application/octet-stream', kind: 'file', width: null, height: null, durationSeconds: null });
  });

  it('is fast on 200 MB files (headers only)', async () => {
    const png = await sharp({ create: { width: 640, height: 480, channels: 3, background: '#000' } })
      .png()
      .toBuffer();
    const bigPng = await bigFile('big.png', png);
    const zeros = await bigFile('zeros.bin', Buffer.alloc(16));
    let t = performance.now();
    const r = await probeFile(bigPng);
    assert.ok(performance.now() - t < 1500, `png took ${performance.now() - t} ms`);
    assert.deepEqual([r.kind, r.width, r.height], ['image', 640, 480]);
    t = performance.now();
    assert.equal((await probeFile(zeros)).kind, 'file');
    assert.ok(performance.now() - t < 1500);
  });
});

describe('probeFile with maxInputPixels (pixel bombs)', () => {
  const limit = DEFAULT_MAX_INPUT_PIXELS;
  /** Asserts that probing `file` with `max` is refused as W×H, quickly and without decoding. */
  async function refused(file: string, max: number, width: number, height: number): Promise<void> {
    const t = performance.now();
    await assert.rejects(probeFile(file, { maxInputPixels: max }), (error: unknown) => {
      assert.ok(error instanceof PixelLimitExceeded, String(error));
      assert.equal(error.code, 'too_large');
      assert.deepEqual([error.width, error.height, error.limit], [width, height, max]);
      assert.equal(error.message, `The image is ${width}×${height} = ${width * height} pixels, over the ${max}-pixel limit (ZHINIAN_MAX_INPUT_PIXELS).`);
      return true;
    });
    assert.ok(performance.now() - t < 3000, `took ${Math.round(performance.now() - t)} ms`);
  }

  it('refuses PNG, JPEG and GIF headers declaring 30000×30000, and still reports them without a limit', async () => {
    await writeFile(p('bomb.png'), pngBomb(30000, 30000));
    await writeFile(p('bomb.jpg'), await jpegBomb(30000, 30000));
    await writeFile(p('bomb.gif'), await gifBomb(30000, 30000));
    for (const [name, mime] of [
      ['bomb.png', 'image/png'],
      ['bomb.jpg', 'image/jpeg'],
      ['bomb.gif', 'image/gif'],
    ]) {
      await refused(p(name), limit, 30000, 30000);
      assert.deepEqual(await probeFile(p(name)), { mimeType: mime, kind: 'image', width: 30000, height: 30000, durationSeconds: null }, name);
    }
  });

  it('refuses a format only ffmpeg reads (BMP) from the size its header declares, without allocating it', async () => {
    await writeFile(p('bomb.bmp'), bmpBomb(30000, 30000));
    await refused(p('bomb.bmp'), limit, 30000, 30000);
    // Under ffmpeg's own bound but over a lowered limit: -max_pixels refuses it before the allocation.
    await writeFile(p('bomb-small.bmp'), bmpBomb(2000, 2000));
    await refused(p('bomb-small.bmp'), 1_000_000, 2000, 2000);
  });

  it('refuses an SVG (no magic bytes, kind "file") that sharp would render over the limit', async () => {
    await writeFile(p('bomb.svg'), svgBomb(30000, 30000));
    await refused(p('bomb.svg'), limit, 30000, 30000);
    assert.equal((await probeFile(p('bomb.svg'))).kind, 'file');
    await writeFile(p('small.svg'), svgBomb(100, 100));
    assert.equal((await probeFile(p('small.svg'), { maxInputPixels: limit })).kind, 'file');
  });

  it('a lowered limit refuses 2000×2000 and accepts 1000×1000 (exactly the limit), in PNG, JPEG and WebP', async () => {
    for (const format of ['png', 'jpeg', 'webp'] as const) {
      await writeFile(p(`2000.${format}`), await solidImage(2000, 2000, format));
      await writeFile(p(`1000.${format}`), await solidImage(1000, 1000, format));
      await refused(p(`2000.${format}`), 1_000_000, 2000, 2000);
      const ok = await probeFile(p(`1000.${format}`), { maxInputPixels: 1_000_000 });
      assert.deepEqual([ok.kind, ok.width, ok.height], ['image', 1000, 1000], format);
    }
  });

  it('leaves video, audio and other files alone', async () => {
    assert.equal((await probeFile(p('v.mp4'), { maxInputPixels: 1000 })).kind, 'video');
    assert.equal((await probeFile(p('a.wav'), { maxInputPixels: 1000 })).kind, 'audio');
    assert.equal((await probeFile(p('notes.txt'), { maxInputPixels: 1000 })).kind, 'file');
  });
});

describe('parseFfmpegInfo', () => {
  it('reads the size a decoder refused', () => {
    const info = parseFfmpegInfo(
      [
        '[bmp @ 0x1c54e700] [IMGUTILS @ 0x7ffe5860fb40] Picture size 30000x30000 is invalid',
        '[bmp @ 0xf877700] [IMGUTILS @ 0x7ffdcab05d30] Picture size 2000x2000 exceeds specified max pixel count 1000000, see the documentation if you wish to increase it',
        "Input #0, bmp_pipe, from 'bomb.bmp':",
        '    Stream #0:0: Video: bmp, none, 25 tbr, 25 tbn, 25 tbc',
      ].join('\n'),
    );
    assert.deepEqual(info.refusedSize, { width: 30000, height: 30000 });
    assert.equal(info.video, null);
  });

  it('parses codec, pixel format, size, duration and display-matrix rotation', () => {
    const text = [
      "Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':",
      '  Duration: 00:01:02.50, start: 0.000000, bitrate: 1000 kb/s',
      '  Stream #0:0[0x1](und): Video: hevc (Main) (hvc1 / 0x31637668), yuv420p(tv, bt709), 1920x1080 [SAR 1:1 DAR 16:9], 900 kb/s, 30 fps (default)',
      '    Side data:',
      '      displaymatrix: rotation of -90.00 degrees',
      '  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo, fltp, 128 kb/s (default)',
    ].join('\n');
    const info = parseFfmpegInfo(text);
    assert.equal(info.durationSeconds, 62.5);
    assert.equal(info.audioCodec, 'aac');
    assert.deepEqual(
      { codec: info.video?.codec, pixFmt: info.video?.pixFmt, w: info.video?.displayWidth, h: info.video?.displayHeight },
      { codec: 'hevc', pixFmt: 'yuv420p', w: 1080, h: 1920 },
    );
  });

  it('skips cover art when looking for the video stream', () => {
    const info = parseFfmpegInfo(
      [
        '  Duration: 00:03:00.00, start: 0.000000, bitrate: 320 kb/s',
        '    Stream #0:0: Audio: mp3, 44100 Hz, stereo, fltp, 320 kb/s',
        '    Stream #0:1: Video: mjpeg (Baseline), yuvj420p(pc, bt470bg/unknown/unknown), 500x500 [SAR 1:1 DAR 1:1], 90k tbr, 90k tbn (attached pic)',
      ].join('\n'),
    );
    assert.equal(info.video?.attachedPic, true);
    assert.equal(info.durationSeconds, 180);
  });
});
