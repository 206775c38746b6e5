/** Picking and checking the input files of a request. */
import sharp, { type Metadata } from 'sharp';
import { ERR } from '../../lib/error-codes.ts';
import { DEFAULT_MAX_INPUT_PIXELS } from '../../media/probe.ts';
import { EngineError, type EngineInput, type EngineRequest, type RunContext } from '../engine.ts';
import { Aborted } from '../../lib/abort.ts';
import { SharpChildExited } from './sharp-child.ts';

export interface ImageInfo {
  path: string;
  /** As displayed: EXIF orientation applied. */
  width: number;
  height: number;
  hasAlpha: boolean;
}

export function imageInputs(request: EngineRequest): EngineInput[] {
  return request.inputs.filter((i) => i.role === 'image');
}

export function invalidInput(message: string): EngineError {
  return new EngineError(ERR.invalid_input, message);
}

/**
 * `limitInputPixels` for every sharp decode of an input image (client data): the configured
 * ZHINIAN_MAX_INPUT_PIXELS. The engine's own renders (SVG, raw pixels) are not held to it.
 */
export function inputPixelLimit(ctx: Pick<RunContext, 'maxInputPixels'>): number {
  return ctx.maxInputPixels ?? DEFAULT_MAX_INPUT_PIXELS;
}

/**
 * Header-only check that `input` is an image sharp can read, within `maxPixels` (width × height;
 * over it: input_too_large); its displayed size.
 */
export async function readImageInfo(input: EngineInput, what: string, maxPixels?: number): Promise<ImageInfo> {
  let meta: Metadata;
  try {
    meta = await sharp(input.path, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw invalidInput(`The ${what} is not a readable image (${shortMessage(err)}).`);
  }
  const width = meta.autoOrient?.width ?? meta.width;
  const height = meta.autoOrient?.height ?? meta.height;
  if (!width || !height) throw invalidInput(`The ${what} has no pixel size.`);
  if (maxPixels && width * height > maxPixels) {
    throw new EngineError(ERR.input_too_large, `The ${what} is ${width}×${height} = ${width * height} pixels, over the ${maxPixels}-pixel limit (ZHINIAN_MAX_INPUT_PIXELS).`);
  }
  return { path: input.path, width, height, hasAlpha: Boolean(meta.hasAlpha) };
}

/**
 * Errors from a sharp pipeline that decodes an input: decoding failures become `invalid_input`
 * (a corrupt or truncated file); file system trouble on our side, a cancel, and a crashed sharp
 * child process stay as they are.
 */
export function decodeError(err: unknown, what: string): Error {
  if (err instanceof Aborted || err instanceof SharpChildExited) return err;
  const message = shortMessage(err);
  // sharp's limitInputPixels: a header that passed the check but decodes bigger.
  if (/exceeds pixel limit/i.test(message)) {
    return new EngineError(ERR.input_too_large, `The ${what} is over the pixel limit (ZHINIAN_MAX_INPUT_PIXELS) (${message}).`);
  }
  if (/ENOSPC|EACCES|EROFS|EMFILE|ENOMEM|unable to open for write|write error/i.test(message)) {
    return err instanceof Error ? err : new Error(message);
  }
  return invalidInput(`The ${what} could not be decoded (${message}).`);
}

function shortMessage(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const line = text.split('\n').find((l) => l.trim()) ?? text;
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}
