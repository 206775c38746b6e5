// Builds the sharp pipeline a task describes: shared by the sharp child process and the parent's
// in-process path for small images, so both produce the same bytes. Plain JavaScript so that the
// child needs no tsx; types in sharp-task.d.mts.
import sharp from 'sharp';

/** The sharp methods a task may call (see SharpOp in sharp-child.ts). */
export const SHARP_METHODS = new Set(['rotate', 'flatten', 'resize', 'composite', 'removeAlpha', 'ensureAlpha', 'sharpen', 'toColourspace', 'greyscale', 'extract', 'png']);

/**
 * A file is client or provider data (the engine's own drawings are SVG or raw pixels): sharp's
 * limitInputPixels stays on for it — the configured limit, or sharp's default when unset.
 */
function checkFileLimit(options) {
  const limit = options?.limitInputPixels;
  if (limit === false || limit === 0) throw new Error('limitInputPixels may not be turned off for a file input');
}

function overlayInput(overlay) {
  const { input } = overlay;
  if (input && typeof input === 'object' && typeof input.svg === 'string') return Buffer.from(input.svg);
  if (input && typeof input === 'object' && typeof input.file === 'string') {
    checkFileLimit(overlay);
    return input.file;
  }
  throw new Error('composite overlay input must be { svg } or { file }');
}

/**
 * source: a file path, an SVG string ({ svg }), or raw 8-bit pixels ({ raw, width, height, channels }).
 * ops: [method, ...args] calls with plain-data arguments, applied in order.
 */
export function buildPipeline(source, inputOptions = {}, ops = []) {
  let pipeline;
  if (typeof source === 'string') {
    checkFileLimit(inputOptions);
    pipeline = sharp(source, inputOptions);
  } else if (source && typeof source.svg === 'string') {
    pipeline = sharp(Buffer.from(source.svg), inputOptions);
  } else if (source && source.raw) {
    const { raw, width, height, channels } = source;
    pipeline = sharp(raw, { ...inputOptions, raw: { width, height, channels } });
  } else {
    throw new Error('unknown pipeline source');
  }
  for (const [method, ...args] of ops) {
    if (!SHARP_METHODS.has(method)) throw new Error(`sharp method not allowed: ${String(method)}`);
    if (method === 'composite') {
      pipeline = pipeline.composite((args[0] ?? []).map((overlay) => ({ ...overlay, input: overlayInput(overlay) })));
    } else {
      pipeline = pipeline[method](...args);
    }
  }
  return pipeline;
}
