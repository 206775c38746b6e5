import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TooLarge } from '../lib/errors.ts';

export interface WrittenFile {
  path: string;
  bytes: number;
  sha256: string;
}

/**
 * Who writes a temp file, in its name: host, pid and this start's random id. Several processes
 * may share a data dir (a server and workers; on PostgreSQL, servers on other machines too), so
 * a start may only remove what it can tell is dead: see `removeStaleEntries`.
 */
const OWNER = { host: os.hostname().replace(/[^A-Za-z0-9.-]/g, '_') || 'host', pid: process.pid, boot: randomBytes(4).toString('hex') };
const OWNED_NAME = /^([A-Za-z0-9._-]+)~(\d+)~([0-9a-f]+)~/;

/** A fresh path inside `dir` (kept on the data disk so storing it is a rename, not a copy). */
export function tempPath(dir: string, suffix = ''): string {
  return path.join(dir, `${OWNER.host}~${OWNER.pid}~${OWNER.boot}~${Date.now()}-${randomBytes(6).toString('hex')}${suffix}`);
}

/**
 * True when the process that named this temp file is certainly gone: it ran on this host and
 * its pid is not running, or is running but is this process under another start id (a
 * container restarted: same host name, same pid). A writer on another host, or a live pid
 * (even if reused), is not known dead: its files wait for the age rule.
 */
function writerIsGone(name: string): boolean {
  const owner = OWNED_NAME.exec(name);
  if (!owner || owner[1] !== OWNER.host) return false;
  const pid = Number(owner[2]);
  if (pid === OWNER.pid) return owner[3] !== OWNER.boot;
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
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
 * that died): files whose writer is known to be gone (`writerIsGone`: a process of this host
 * that no longer runs), and any entry older than `maxAgeMs` (younger ones, of a writer that may
 * be alive on another host, may be in use). A process that shut down cleanly left nothing.
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
    if (stat && (now - stat.mtimeMs > maxAgeMs || (entry.isFile() && writerIsGone(entry.name)))) {
      await fsp.rm(full, { recursive: true, force: true });
      removed++;
    }
  }
  return removed;
}
