import { VIDEO_SHORT_SIDE, type VideoRatio, type VideoResolution } from '../../contract/index.ts';

/** `adaptive` follows the first image, but never beyond 4:1 or 1:4 (keeps frames encodable). */
const MAX_ADAPTIVE_ASPECT = 4;

/** Rounds to an integer, then an odd result up to the next even number. */
const even = (n: number): number => Math.max(2, 2 * Math.round(Math.round(n) / 2));

/**
 * Frame size of a generated video. The short side is 480/720/1080; landscape and square ratios
 * fix the height, portrait ones the width, and the other side is rounded to an even number
 * (yuv420p needs even sizes). `adaptive` takes the first image's aspect, else 16:9.
 */
export function videoSize(
  ratio: VideoRatio | undefined,
  resolution: VideoResolution | undefined,
  firstImage?: { width: number; height: number } | null,
): { width: number; height: number } {
  const short = VIDEO_SHORT_SIDE[resolution ?? '720p'] ?? VIDEO_SHORT_SIDE['720p'];
  let w: number;
  let h: number;
  if (!ratio || ratio === 'adaptive') {
    if (firstImage && firstImage.width > 0 && firstImage.height > 0) {
      const aspect = Math.min(MAX_ADAPTIVE_ASPECT, Math.max(1 / MAX_ADAPTIVE_ASPECT, firstImage.width / firstImage.height));
      w = aspect;
      h = 1;
    } else {
      w = 16;
      h = 9;
    }
  } else {
    const m = /^(\d+):(\d+)$/.exec(ratio);
    w = m ? Number(m[1]) : 16;
    h = m ? Number(m[2]) : 9;
  }
  if (w >= h) return { width: even((short * w) / h), height: short };
  return { width: short, height: even((short * h) / w) };
}
