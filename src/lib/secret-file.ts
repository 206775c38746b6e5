import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/**
 * A secret made once and kept in a file (mode 600), so restarts and every process sharing the
 * data dir agree on it. When two processes start together, the first writer wins and the
 * other reads its value.
 */
export function readOrCreateSecret(file: string, make: () => string = () => randomBytes(32).toString('base64url')): { value: string; created: boolean } {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  try {
    return { value: fs.readFileSync(file, 'utf8').trim(), created: false };
  } catch {
    const value = make();
    try {
      fs.writeFileSync(file, `${value}\n`, { mode: 0o600, flag: 'wx' });
      return { value, created: true };
    } catch {
      return { value: fs.readFileSync(file, 'utf8').trim(), created: false };
    }
  }
}
