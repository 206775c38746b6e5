import { randomBytes } from 'node:crypto';

// Crockford base32: URL-safe, and lexical order equals numeric order.
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

let lastMs = 0;
let lastRandom: Buffer = Buffer.alloc(10);
// Randomness drawn 4 KiB at a time: one syscall per ~400 ids instead of one per id.
let pool: Buffer = Buffer.alloc(0);
let poolOffset = 0;

function random10(): Buffer {
  if (poolOffset + 10 > pool.length) {
    pool = randomBytes(4096);
    poolOffset = 0;
  }
  poolOffset += 10;
  return Buffer.from(pool.subarray(poolOffset - 10, poolOffset));
}

/**
 * `prefix_` + 10 chars of milliseconds + 16 chars of randomness (ULID layout, lower case).
 * Within one millisecond the random part is incremented, so ids made by one process sort in
 * creation order.
 */
export function newId(prefix: 'job' | 'asset' | 'whd' | 'wrk' | 'key' | 'aud'): string {
  const now = Date.now();
  if (now <= lastMs) {
    incrementInPlace(lastRandom);
  } else {
    lastMs = now;
    lastRandom = random10();
  }
  return `${prefix}_${encodeTime(lastMs)}${encodeRandom(lastRandom)}`;
}

const ID_SHAPE = /^[0-9a-hjkmnp-tv-z]{26}$/;

/**
 * True for a well-formed id of that kind. Ids from a URL or a body are checked before any
 * query, so text no id can be (NUL, a megabyte) never reaches the database.
 */
export function isId(prefix: 'job' | 'asset' | 'key' | 'whd', value: string): boolean {
  return value.length === prefix.length + 27 && value.startsWith(`${prefix}_`) && ID_SHAPE.test(value.slice(prefix.length + 1));
}

function encodeTime(ms: number): string {
  let out = '';
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[ms % 32] + out;
    ms = Math.floor(ms / 32);
  }
  return out;
}

function encodeRandom(bytes: Buffer): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out;
}

function incrementInPlace(bytes: Buffer): void {
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i] < 255) {
      bytes[i]++;
      return;
    }
    bytes[i] = 0;
  }
}
