import { createHash, randomBytes } from 'node:crypto';
import { newId } from '../lib/ids.ts';

/**
 * A key made in the console: `zk_<26 id chars>_<43 secret chars>`. The id part names its row
 * (`key_<id>`), so a lookup reads one row by primary key and compares one hash.
 */
const KEY_SHAPE = /^zk_([0-9a-hjkmnp-tv-z]{26})_[A-Za-z0-9_-]{43}$/;

export const hashKey = (key: string): string => createHash('sha256').update(key).digest('hex');

/** The row id of a console key, or null when `key` is not shaped like one (an env key, say). */
export function keyIdOf(key: string): string | null {
  const match = KEY_SHAPE.exec(key);
  return match ? `key_${match[1]}` : null;
}

/** The part of a key that may be shown and logged: it names the key, opens nothing. */
export const keyPrefix = (keyId: string): string => `zk_${keyId.slice(4)}`;

/** A fresh key: its row id, shown prefix, the secret (shown once) and the hash that is kept. */
export function makeKey(): { id: string; prefix: string; secret: string; hash: string } {
  const id = newId('key');
  const secret = `${keyPrefix(id)}_${randomBytes(32).toString('base64url')}`;
  return { id, prefix: keyPrefix(id), secret, hash: hashKey(secret) };
}
