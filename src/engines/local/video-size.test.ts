import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { videoSize } from './video-size.ts';

describe('videoSize', () => {
  it('fixes the short side per resolution; landscape and square set the height', () => {
    assert.deepEqual(videoSize('16:9', '720p'), { width: 1280, height: 720 });
    assert.deepEqual(videoSize('16:9', '1080p'), { width: 1920, height: 1080 });
    assert.deepEqual(videoSize('16:9', '480p'), { width: 854, height: 480 });
    assert.deepEqual(videoSize('4:3', '720p'), { width: 960, height: 720 });
    assert.deepEqual(videoSize('1:1', '480p'), { width: 480, height: 480 });
    assert.deepEqual(videoSize('21:9', '1080p'), { width: 2520, height: 1080 });
  });

  it('portrait ratios set the width; sizes are even', () => {
    assert.deepEqual(videoSize('9:16', '480p'), { width: 480, height: 854 });
    assert.deepEqual(videoSize('9:16', '720p'), { width: 720, height: 1280 });
    assert.deepEqual(videoSize('3:4', '1080p'), { width: 1080, height: 1440 });
  });

  it('adaptive follows the first image, else 16:9', () => {
    assert.deepEqual(videoSize('adaptive', '480p', { width: 1000, height: 500 }), { width: 960, height: 480 });
    assert.deepEqual(videoSize('adaptive', '720p', { width: 500, height: 1000 }), { width: 720, height: 1440 });
    assert.deepEqual(videoSize('adaptive', '720p', { width: 333, height: 333 }), { width: 720, height: 720 });
    assert.deepEqual(videoSize('adaptive', '720p'), { width: 1280, height: 720 });
    // Extreme panoramas are held to 4:1.
    assert.deepEqual(videoSize('adaptive', '480p', { width: 10000, height: 100 }), { width: 1920, height: 480 });
    for (const img of [
      { width: 1001, height: 777 },
      { width: 123, height: 457 },
    ]) {
      const s = videoSize('adaptive', '1080p', img);
      assert.equal(s.width % 2, 0);
      assert.equal(s.height % 2, 0);
    }
  });
});
