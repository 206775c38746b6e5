/**
 * Pixel bombs for tests (not a test file itself): tiny files whose headers declare huge images.
 * Nothing here decodes them; each is a few hundred bytes at most.
 */
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';

function pngChunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body) >>> 0);
  return Buffer.concat([length, body, crc]);
}

/** A valid-looking 8-bit greyscale PNG whose IHDR declares width × height; its IDAT holds one row. */
export function pngBomb(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth; colour type 0 (grey), no interlace
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', deflateSync(Buffer.alloc(Math.min(width, 65_536) + 1))),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A 16×16 baseline JPEG whose SOF0 was rewritten to declare width × height (≤ 65535 each). */
export async function jpegBomb(width: number, height: number): Promise<Buffer> {
  const jpeg = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#808080' } })
    .jpeg({ mozjpeg: false, progressive: false })
    .toBuffer();
  for (let i = 2; i + 9 < jpeg.length; ) {
    const marker = jpeg[i + 1];
    if (marker >= 0xc0 && marker <= 0xc2) {
      jpeg.writeUInt16BE(height, i + 5);
      jpeg.writeUInt16BE(width, i + 7);
      return jpeg;
    }
    i += 2 + jpeg.readUInt16BE(i + 2);
  }
  throw new Error('jpegBomb: no SOF marker');
}

/** A one-frame GIF whose logical screen and frame both declare width × height (≤ 65535 each). */
export async function gifBomb(width: number, height: number): Promise<Buffer> {
  const gif = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#808080' } })
    .gif()
    .toBuffer();
  let i = 13;
  if (gif[10] & 0x80) i += 3 * (1 << ((gif[10] & 7) + 1));
  while (gif[i] === 0x21) {
    i += 2;
    while (gif[i]) i += gif[i] + 1;
    i++;
  }
  if (gif[i] !== 0x2c) throw new Error('gifBomb: no image descriptor');
  gif.writeUInt16LE(width, 6);
  gif.writeUInt16LE(height, 8);
  gif.writeUInt16LE(width, i + 5);
  gif.writeUInt16LE(height, i + 7);
  return gif;
}

/** A 24-bit BMP (which sharp does not read; ffmpeg does) declaring width × height, with 64 bytes of pixels. */
export function bmpBomb(width: number, height: number): Buffer {
  const bmp = Buffer.alloc(54 + 64);
  bmp.write('BM', 0, 'latin1');
  bmp.writeUInt32LE(bmp.length, 2);
  bmp.writeUInt32LE(54, 10);
  bmp.writeUInt32LE(40, 14);
  bmp.writeInt32LE(width, 18);
  bmp.writeInt32LE(height, 22);
  bmp.writeUInt16LE(1, 26);
  bmp.writeUInt16LE(24, 28);
  return bmp;
}

/** An SVG (no magic bytes: file-type does not name it, sharp renders it) of width × height. */
export function svgBomb(width: number, height: number): Buffer {
  return Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><rect width="10" height="10"/></svg>`);
}

/** A real, solid-colour image of width × height (compresses to little; sharp writes it quickly). */
export function solidImage(width: number, height: number, format: 'png' | 'jpeg' | 'webp' = 'png'): Promise<Buffer> {
  const image = sharp({ create: { width, height, channels: 3, background: '#3366cc' } });
  return (format === 'png' ? image.png({ compressionLevel: 9 }) : format === 'jpeg' ? image.jpeg() : image.webp()).toBuffer();
}
