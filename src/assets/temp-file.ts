import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TooLarge } from '../lib/errors.ts';

export interface WrittenFile {
  path: string;
  bytes: number;
  sha256: string;
}

/** A fresh path inside `dir` (kept on the data disk so storing it is a rename, not a copy). */
export function tempPath(dir: string, suffix = ''): string {
  return path.join(dir, `${Date.now()}-${randomBytes(6).toString('hex')}${suffix}`);
}

/**
 * Streams `source` into a new file under `dir`, hashing as it goes and stopping at
 * `maxBytes`: memory use stays flat whatever the size. The file is removed on any failure.
 */
export async function writeStreamToTemp(source: Readable, dir: string, maxBytes: number): Promise<WrittenFile> {
  await fsp.mkdir(dir, { recursive: true });
  const file = tempPath(dir);
  const hash = createHash('sha256');
  let bytes = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      bytes += chunk.length;
      if (bytes > maxBytes) return done(new TooLarge(`File is larger than the ${maxBytes}-byte limit.`));
      hash.update(chunk);
      done(null, chunk);
    },
  });
  try {
    await pipeline(source, meter, fs.createWriteStream(file));
  } catch (error) {
    await fsp.rm(file, { force: true });
    throw error;
  }
  return { path: file, bytes, sha256: hash.digest('hex') };
}

/** Hash and size of a file already on disk (engine outputs). */
export async function hashFile(file: string): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of fs.createReadStream(file)) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { bytes, sha256: hash.digest('hex') };
}

/**
 * Removes what killed processes left in a temp dir (half-received uploads, work dirs of runs
 * that died). Only entries older than `maxAgeMs` go: younger ones may belong to a live process.
 */
export async function removeStaleEntries(dir: string, maxAgeMs: number, now = Date.now()): Promise<number> {
  let removed = 0;
  const entries = await fsp.readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory() && entry.name === 'work') {
      removed += await removeStaleEntries(full, maxAgeMs, now);
      continue;
    }
    const stat = await fsp.stat(full).catch(() => null);
    if (stat && now - stat.mtimeMs > maxAgeMs) {
      await fsp.rm(full, { recursive: true, force: true });
      removed++;
    }
  }
  return removed;
}
