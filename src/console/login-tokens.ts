import { createHash, randomBytes } from 'node:crypto';
import type { DbHandle } from '../db/index.ts';
import type { Clock } from '../lib/clock.ts';

/** A one-time sign-in link stays valid this long (CONTRACT: 15 minutes). */
const LOGIN_TOKEN_TTL_MS = 15 * 60_000;

const sha256 = (value: string) => createHash('sha256').update(value).digest('hex');

export interface LoginTokens {
  /** A fresh token for `/admin/login?token=…` (kept only as a hash). */
  issue(): Promise<string>;
  /** Whether `token` is valid now, without spending it (the link's page shows this). */
  peek(token: string): Promise<boolean>;
  /** True once per valid token: consuming deletes it, so a second use (on any instance) fails. */
  consume(token: string): Promise<boolean>;
}

/** One-time sign-in links for a console without an identity provider (a laptop). */
export function createLoginTokens(handle: DbHandle, clock: Clock): LoginTokens {
  const { db } = handle;
  return {
    async issue() {
      const token = randomBytes(32).toString('base64url');
      const now = clock.now();
      await db.deleteFrom('console_login_tokens').where('expires_at', '<=', now).execute();
      await db
        .insertInto('console_login_tokens')
        .values({ token_hash: sha256(token), expires_at: now + LOGIN_TOKEN_TTL_MS })
        .execute();
      return token;
    },
    async peek(token) {
      if (token.length === 0 || token.length > 128) return false;
      const row = await db.selectFrom('console_login_tokens').select('expires_at').where('token_hash', '=', sha256(token)).where('expires_at', '>', clock.now()).executeTakeFirst();
      return row !== undefined;
    },
    async consume(token) {
      if (token.length === 0 || token.length > 128) return false;
      const deleted = await db.deleteFrom('console_login_tokens').where('token_hash', '=', sha256(token)).where('expires_at', '>', clock.now()).executeTakeFirst();
      return Number(deleted.numDeletedRows) === 1;
    },
  };
}
