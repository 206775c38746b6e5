import sharp from 'sharp';

/**
 * Resizes an image to exactly `target` (cover, Lanczos) as a PNG beside it and returns its
 * path. The decode is held to `maxInputPixels` (sharp's limitInputPixels): an image whose
 * pixels exceed it although its header passed is refused with DecodeLimitExceeded.
 */
export class DecodeLimitExceeded extends Error {
  constructor(readonly limit: number) {
    super(`The image decodes to more than the ${limit}-pixel limit (ZHINIAN_MAX_INPUT_PIXELS).`);
  }
}

export async function resizeImageTo(file: string, target: { width: number; height: number }, maxInputPixels: number): Promise<string> {
  const resized = `${file}-fit.png`;
  try {
    await sharp(file, { limitInputPixels: maxInputPixels }).resize(target.width, target.height, { fit: 'cover', kernel: 'lanczos3' }).png({ compressionLevel: 4 }).toFile(resized);
  } catch (error) {
    if (/exceeds pixel limit/i.test((error as Error).message)) throw new DecodeLimitExceeded(maxInputPixels);
    throw error;
  }
  return resized;
}
