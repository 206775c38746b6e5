/**
 * image.inpaint: pixels under the mask (white = repaint) are filled from their surroundings with
 * OpenCV's Telea inpainting, run in a worker on the mask's bounding box plus a margin. Every pixel
 * outside the mask is copied from the decoded original, so it is byte-identical. Decoding and
 * encoding of big images run in the sharp child process, so a cancel stops them too.
 */
import { join } from 'node:path';
import type { EngineOutput, EngineRequest, RunContext } from '../engine.ts';
import { throwIfAborted } from '../../lib/abort.ts';
import { inpaintInWorker } from './inpaint-pool.ts';
import { decodeError, imageInputs, inputPixelLimit, invalidInput, readImageInfo } from './inputs.ts';
import { promptRenderTask } from './render.ts';
import { IN_PROCESS_MAX_PIXELS, runSharpTask, type SharpTask } from './sharp-child.ts';

const RADIUS = 5;
/** Context around the mask's bounding box handed to the inpainter (Telea looks RADIUS px out). */
const MARGIN = 4 * RADIUS;

interface RawImage {
  data: Buffer;
  width: number;
  height: number;
  channels: 3 | 4;
}

/** A decode to raw pixels: in the sharp child for big images (seconds, cancellable), else here. */
async function decodeRaw(
  task: Omit<SharpTask, 'output'>,
  pixels: number,
  workDir: string,
  signal: AbortSignal,
): Promise<{ data: Buffer; width: number; height: number; channels: number }> {
  const { data, width, height, channels } = await runSharpTask({ ...task, output: { raw: true } }, signal, {
    inProcess: pixels <= IN_PROCESS_MAX_PIXELS,
    scratchDir: workDir,
  });
  return { data: data!, width, height, channels };
}

/**
 * Decodes the original as displayed (EXIF orientation applied) to 8-bit sRGB, RGB or RGBA.
 * `pixels`: its size, which decides where the decode runs; `maxPixels`: sharp's limitInputPixels.
 */
async function decodeOriginal(path: string, pixels: number, workDir: string, signal: AbortSignal, maxPixels: number): Promise<RawImage> {
  const { data, ...info } = await decodeRaw(
    { input: { kind: 'file', path }, inputOptions: { limitInputPixels: maxPixels }, ops: [['rotate'], ['toColourspace', 'srgb']] },
    pixels,
    workDir,
    signal,
  );
  if (info.channels === 3 || info.channels === 4) return { data, width: info.width, height: info.height, channels: info.channels };
  // Grey (+alpha) that stayed single-band: expand.
  const hasAlpha = info.channels === 2;
  const channels = hasAlpha ? 4 : 3;
  const out = Buffer.alloc(info.width * info.height * channels);
  for (let i = 0, j = 0; i < data.length; i += info.channels, j += channels) {
    out[j] = out[j + 1] = out[j + 2] = data[i];
    if (hasAlpha) out[j + 3] = data[i + 1];
  }
  return { data: out, width: info.width, height: info.height, channels };
}

/**
 * The mask at `width`×`height`: alpha flattened onto black, grey, nearest-neighbour, ≥128 → 255.
 * `pixels`: the larger of the mask's and the output's size, which decides where the decode runs;
 * `maxPixels`: sharp's limitInputPixels for the mask.
 */
async function decodeMask(path: string, pixels: number, width: number, height: number, workDir: string, signal: AbortSignal, maxPixels: number): Promise<Uint8Array> {
  const { data, channels: step } = await decodeRaw(
    {
      input: { kind: 'file', path },
      inputOptions: { limitInputPixels: maxPixels },
      ops: [['rotate'], ['flatten', { background: '#000000' }], ['greyscale'], ['resize', width, height, { fit: 'fill', kernel: 'nearest' }]],
    },
    pixels,
    workDir,
    signal,
  );
  const mask = new Uint8Array(width * height);
  for (let i = 0, j = 0; j < mask.length; i += step, j++) mask[j] = data[i] >= 128 ? 255 : 0;
  return mask;
}

export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** Bounding box of the non-zero mask pixels, or null when the mask is empty. */
export function maskBounds(mask: Uint8Array, width: number, height: number): Box | null {
  let minX = width;
  let minY = height;
  let maxX = -1;
  let maxY = -1;
  for (let y = 0; y < height; y++) {
    const row = y * width;
    let first = -1;
    let last = -1;
    for (let x = 0; x < width; x++) {
      if (mask[row + x]) {
        if (first < 0) first = x;
        last = x;
      }
    }
    if (first >= 0) {
      if (first < minX) minX = first;
      if (last > maxX) maxX = last;
      if (y < minY) minY = y;
      maxY = y;
    }
  }
  if (maxX < 0) return null;
  return { x: minX, y: minY, width: maxX - minX + 1, height: maxY - minY + 1 };
}

export async function inpaintImage(request: EngineRequest, ctx: RunContext): Promise<EngineOutput[]> {
  throwIfAborted(ctx.signal);
  const images = imageInputs(request);
  const originalInput = images[0];
  const maskInput = request.inputs.find((i) => i.role === 'mask') ?? images[1];
  if (!originalInput) throw invalidInput('image.inpaint needs the original image as the first input.');
  if (!maskInput) throw invalidInput('image.inpaint needs a mask image (white = area to repaint) as the second input.');
  const maxPixels = inputPixelLimit(ctx);
  const originalInfo = await readImageInfo(originalInput, 'original image', maxPixels);
  const maskInfo = await readImageInfo(maskInput, 'mask image', maxPixels);
  throwIfAborted(ctx.signal);

  let original: RawImage;
  try {
    original = await decodeOriginal(originalInput.path, originalInfo.width * originalInfo.height, ctx.workDir, ctx.signal, maxPixels);
  } catch (err) {
    throw decodeError(err, 'original image');
  }
  throwIfAborted(ctx.signal);
  const { width, height, channels } = original;
  let mask: Uint8Array;
  try {
    mask = await decodeMask(maskInput.path, Math.max(maskInfo.width * maskInfo.height, width * height), width, height, ctx.workDir, ctx.signal, maxPixels);
  } catch (err) {
    throw decodeError(err, 'mask image');
  }
  throwIfAborted(ctx.signal);
  ctx.onProgress(15);

  const out = original.data; // edited in place under the mask only
  const box = maskBounds(mask, width, height);
  if (box && box.width === width && box.height === height && mask.every((v) => v !== 0)) {
    // Nothing to fill from: repaint the whole frame from the prompt instead.
    const repaint = await decodeRaw(promptRenderTask({ prompt: request.prompt ?? '', width, height }, { raw: true }), width * height, ctx.workDir, ctx.signal);
    const { data, channels: step } = repaint;
    for (let i = 0, j = 0; i < out.length; i += channels, j += step) {
      out[i] = data[j];
      out[i + 1] = data[j + 1];
      out[i + 2] = data[j + 2];
    }
  } else if (box) {
    const x0 = Math.max(0, box.x - MARGIN);
    const y0 = Math.max(0, box.y - MARGIN);
    const x1 = Math.min(width, box.x + box.width + MARGIN);
    const y1 = Math.min(height, box.y + box.height + MARGIN);
    const cw = x1 - x0;
    const ch = y1 - y0;
    const rgb = new Uint8Array(cw * ch * 3);
    const alpha = channels === 4 ? new Uint8Array(cw * ch) : undefined;
    const cropMask = new Uint8Array(cw * ch);
    for (let y = 0; y < ch; y++) {
      const srcRow = ((y0 + y) * width + x0) * channels;
      const maskRow = (y0 + y) * width + x0;
      for (let x = 0; x < cw; x++) {
        const s = srcRow + x * channels;
        const d = (y * cw + x) * 3;
        rgb[d] = out[s];
        rgb[d + 1] = out[s + 1];
        rgb[d + 2] = out[s + 2];
        if (alpha) alpha[y * cw + x] = out[s + 3];
        cropMask[y * cw + x] = mask[maskRow + x];
      }
    }
    ctx.onProgress(25);
    const result = await inpaintInWorker({ width: cw, height: ch, channels: 3, data: rgb, mask: cropMask, alpha, radius: RADIUS }, ctx.signal);
    throwIfAborted(ctx.signal);
    for (let y = 0; y < ch; y++) {
      const dstRow = ((y0 + y) * width + x0) * channels;
      const maskRow = (y0 + y) * width + x0;
      for (let x = 0; x < cw; x++) {
        if (!mask[maskRow + x]) continue;
        const d = dstRow + x * channels;
        const s = (y * cw + x) * 3;
        out[d] = result.data[s];
        out[d + 1] = result.data[s + 1];
        out[d + 2] = result.data[s + 2];
        if (result.alpha) out[d + 3] = result.alpha[y * cw + x];
      }
    }
  }
  ctx.onProgress(85);

  // Encoding a big PNG takes seconds: then it runs in the sharp child.
  const path = join(ctx.workDir, 'inpainted.png');
  await runSharpTask(
    {
      input: { kind: 'raw', data: out, width, height, channels },
      inputOptions: { limitInputPixels: false },
      ops: [['png', { compressionLevel: width * height > 16_000_000 ? 2 : 4, adaptiveFiltering: false }]],
      output: { path },
    },
    ctx.signal,
    { inProcess: width * height <= IN_PROCESS_MAX_PIXELS, scratchDir: ctx.workDir },
  );
  throwIfAborted(ctx.signal);
  ctx.onProgress(100);
  return [{ path, kind: 'image', mimeType: 'image/png' }];
}
