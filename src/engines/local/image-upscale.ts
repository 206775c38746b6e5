/** image.upscale: lanczos3 resize to a 2048/3840/7680 long side, aspect kept, mild sharpen, PNG. */
import { join } from 'node:path';
import type { EngineOutput, EngineRequest, RunContext } from '../engine.ts';
import { UPSCALE_LONG_SIDE, UPSCALE_RESOLUTIONS, type UpscaleResolution } from '../../contract/index.ts';
import { throwIfAborted } from '../../lib/abort.ts';
import { decodeError, imageInputs, inputPixelLimit, invalidInput, readImageInfo } from './inputs.ts';
import { runSharpTask } from './sharp-child.ts';

/** Output size: the long side becomes `longSide`, the short one keeps the aspect (at least 1). */
export function upscaleSize(width: number, height: number, longSide: number): { width: number; height: number } {
  if (width >= height) return { width: longSide, height: Math.max(1, Math.round((height * longSide) / width)) };
  return { width: Math.max(1, Math.round((width * longSide) / height)), height: longSide };
}

export async function upscaleImage(request: EngineRequest, ctx: RunContext): Promise<EngineOutput[]> {
  throwIfAborted(ctx.signal);
  const resolution: UpscaleResolution = request.params.resolution ?? '4k';
  if (!UPSCALE_RESOLUTIONS.includes(resolution)) throw invalidInput(`resolution must be one of ${UPSCALE_RESOLUTIONS.join(', ')}.`);
  const input = imageInputs(request)[0];
  if (!input) throw invalidInput('image.upscale needs an input image.');
  const info = await readImageInfo(input, 'input image', inputPixelLimit(ctx));
  throwIfAborted(ctx.signal);
  ctx.onProgress(10);

  const target = upscaleSize(info.width, info.height, UPSCALE_LONG_SIDE[resolution]);
  const path = join(ctx.workDir, 'upscaled.png');
  const pixels = target.width * target.height;
  try {
    // In the sharp child process: an 8k resize + PNG encode takes seconds, and a cancel kills it.
    await runSharpTask(
      {
        input: { kind: 'file', path: info.path },
        inputOptions: { limitInputPixels: inputPixelLimit(ctx) },
        ops: [
          ['rotate'],
          ['resize', target.width, target.height, { fit: 'fill', kernel: 'lanczos3' }],
          ['sharpen', { sigma: 0.8, m1: 0.6, m2: 1.5 }],
          ['png', { compressionLevel: pixels > 20_000_000 ? 1 : 3, adaptiveFiltering: false }],
        ],
        output: { path },
      },
      ctx.signal,
    );
  } catch (err) {
    throw decodeError(err, 'input image');
  }
  throwIfAborted(ctx.signal);
  ctx.onProgress(100);
  return [{ path, kind: 'image', mimeType: 'image/png' }];
}
