import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import path from 'node:path';
import type { ApiKey } from '../config/index.ts';
import { Unauthorized } from '../lib/errors.ts';
import { readOrCreateSecret } from '../lib/secret-file.ts';

export interface Authenticator {
  /** The client id owning the request's key; throws Unauthorized. */
  authenticate(headers: Record<string, string | string[] | undefined>): string;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Keys are compared as SHA-256 digests with timingSafeEqual, against every configured key
 * without stopping at a match, so response time reveals neither a key's prefix nor its position.
 */
export function createAuthenticator(keys: ApiKey[]): Authenticator {
  const known = keys.map((k) => ({ clientId: k.clientId, digest: digest(k.key) }));
  return {
    authenticate(headers) {
      const presented = presentedKey(headers);
      if (presented === null) throw new Unauthorized('Missing API key: send Authorization: Bearer <API_KEY> or X-Zhinian-Api-Key.');
      const candidate = digest(presented);
      let clientId: string | null = null;
      for (const k of known) {
        if (timingSafeEqual(candidate, k.digest) && clientId === null) clientId = k.clientId;
      }
      if (clientId === null) throw new Unauthorized('Invalid API key.');
      return clientId;
    },
  };
}

function presentedKey(headers: Record<string, string | string[] | undefined>): string | null {
  const auth = headers.authorization;
  if (typeof auth === 'string' && auth.trim() !== '') {
    const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
    if (!m) throw new Unauthorized('Authorization header must be "Bearer <API_KEY>".');
    return m[1].trim();
  }
  const header = headers['x-zhinian-api-key'];
  if (typeof header === 'string' && header.trim() !== '') return header.trim();
  return null;
}

/**
 * With no ZHINIAN_API_KEYS, one key for client `default` is made on first start and kept in
 * the data dir, so restarts (and separate worker processes) agree on it.
 */
export function loadOrCreateDefaultKey(dataDir: string): { key: ApiKey; created: boolean } {
  const { value, created } = readOrCreateSecret(path.join(dataDir, 'api-key'), () => `zk_${randomBytes(24).toString('base64url')}`);
  return { key: { clientId: 'default', key: value }, created };
}
