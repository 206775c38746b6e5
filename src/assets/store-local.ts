import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Store } from './store.ts';

/** Assets as files under `<dataDir>/assets`, keys used as relative paths. */
export function createLocalStore(root: string): Store {
  fs.mkdirSync(root, { recursive: true });
  const resolve = (key: string) => {
    const full = path.resolve(root, key);
    if (!full.startsWith(root + path.sep)) throw new Error(`bad storage key ${key}`);
    return full;
  };
  return {
    name: 'local',
    async putFile(key, filePath) {
      const target = resolve(key);
      await fsp.mkdir(path.dirname(target), { recursive: true });
      try {
        // Same filesystem (the temp dir lives in the data dir): an atomic rename, no copy.
        await fsp.rename(filePath, target);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
        await fsp.copyFile(filePath, `${target}.part`);
        await fsp.rename(`${target}.part`, target);
        await fsp.rm(filePath, { force: true });
      }
    },
    async get(key, range) {
      const file = resolve(key);
      await fsp.access(file);
      return fs.createReadStream(file, range ? { start: range.start, end: range.end, highWaterMark: 256 * 1024 } : { highWaterMark: 256 * 1024 });
    },
    async stat(key) {
      try {
        const s = await fsp.stat(resolve(key));
        return { bytes: s.size };
      } catch {
        return null;
      }
    },
    async delete(key) {
      await fsp.rm(resolve(key), { force: true });
    },
    localPath: resolve,
    async check() {
      await fsp.access(root, fs.constants.W_OK);
    },
  };
}
