/**
 * image.generate: a deterministic PNG drawn from the prompt, optionally over a reference image.
 * Rendering and encoding run in the sharp child process, so a cancel stops them at once.
 */
import { join } from 'node:path';
import type { EngineOutput, EngineRequest, RunContext } from '../engine.ts';
import { throwIfAborted } from '../../lib/abort.ts';
import { decodeError, imageInputs, inputPixelLimit, invalidInput, readImageInfo } from './inputs.ts';
import { renderPromptImage } from './render.ts';

const MAX_SIDE = 16384;

function side(value: number | undefined, name: string): number {
  if (value === undefined || value === null) return 1024;
  if (!Number.isInteger(value) || value < 1 || value > MAX_SIDE) {
    throw invalidInput(`${name} must be an integer from 1 to ${MAX_SIDE}.`);
  }
  return value;
}

export async function generateImage(request: EngineRequest, ctx: RunContext): Promise<EngineOutput[]> {
  throwIfAborted(ctx.signal);
  const width = side(request.params.width, 'width');
  const height = side(request.params.height, 'height');
  const refInput = imageInputs(request)[0];
  const reference = refInput ? await readImageInfo(refInput, 'reference image', inputPixelLimit(ctx)) : null;
  throwIfAborted(ctx.signal);
  ctx.onProgress(10);

  const path = join(ctx.workDir, 'image.png');
  // Big canvases: spend less time in zlib.
  const compressionLevel = width * height > 16_000_000 ? 2 : 4;
  try {
    await renderPromptImage({ prompt: request.prompt ?? '', width, height, reference: reference?.path, maxInputPixels: inputPixelLimit(ctx), compressionLevel }, path, ctx.signal);
  } catch (err) {
    throw reference ? decodeError(err, 'reference image') : err;
  }
  throwIfAborted(ctx.signal);
  ctx.onProgress(100);
  return [{ path, kind: 'image', mimeType: 'image/png' }];
}
