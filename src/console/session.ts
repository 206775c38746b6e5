import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ConsoleConfig } from '../config/index.ts';
import type { DbHandle, Tx } from '../db/index.ts';
import type { Clock } from '../lib/clock.ts';
import { type Identity, roleFor } from './roles.ts';

export type Role = 'admin' | 'viewer';

export interface ConsoleUser {
  /** Who, in the audit log and the session list: the verified e-mail, else `sub:<subject>`. */
  email: string;
  name: string;
  role: Role;
}

/** What a session was given at sign-in, kept so its role can be resolved again later. */
type Grant = { via: 'link' } | { via: 'oidc'; identity: Identity };

export interface ConsoleSession {
  user: ConsoleUser;
  /** Sent back in `X-CSRF-Token` on every change. */
  csrfToken: string;
  /** Epoch ms: the session ends then, however active it is. */
  expiresAt: number;
}

export const CONSOLE_PATH = '/admin';
/**
 * The session cookie: Path /admin keeps it off `/api/v1`. Behind https it is `__Host-` prefixed,
 * which browsers accept only from this exact origin, Secure, with Path=/ and no Domain: a
 * sibling subdomain or a plain-http answer cannot plant one.
 */
const SESSION_COOKIE = 'zhinian_console';
const HOST_SESSION_COOKIE = '__Host-zhinian_console';

export interface Sessions {
  /** How many session cookies the request carries (more than one is refused, never resolved by order). */
  cookieCount(request: FastifyRequest): number;
  /**
   * The request's session, or null (no cookie, a tampered or unknown one, ended or expired, or
   * one whose user no longer has any role). Its role is resolved again from what it was given
   * at sign-in against the role settings in force, so a change of them reaches live sessions:
   * a lost role ends the session, a changed one is written back.
   */
  load(request: FastifyRequest): Promise<ConsoleSession | null>;
  /** Signs `user` in: a new session (never one the browser brought along) and its cookie. */
  start(reply: FastifyReply, user: ConsoleUser, grant: Grant): Promise<ConsoleSession>;
  /** Ends the request's session for good (its row is deleted: every instance refuses it) and clears the cookie. */
  end(request: FastifyRequest, reply: FastifyReply): Promise<void>;
  /** Clears every session cookie this console may have set (after refusing a request that carried two). */
  clearCookies(reply: FastifyReply): void;
  /** Live sessions, newest first (at most `limit`). */
  list(limit: number): Promise<SessionSummary[]>;
  /** Ends every session of `userKey` (an e-mail or `sub:…`), or every session with `null`, in `tx` if given; the number ended. */
  endAll(userKey: string | null, tx?: Tx): Promise<number>;
  /** Cookie attributes (also used for the sign-in flow's own short-lived cookie). */
  readonly secure: boolean;
}

interface SessionSummary {
  user: ConsoleUser;
  via: Grant['via'];
  createdAt: number | null;
  expiresAt: number;
}

interface StoredSession {
  user: ConsoleUser;
  csrfToken: string;
  grant?: Grant;
}

const sha256 = (value: string) => createHash('sha256').update(value).digest('hex');

/** The role `grant` carries under the settings in force; null: none (the session ends). */
function roleOfGrant(grant: Grant | undefined, config: ConsoleConfig): Role | null {
  if (grant?.via === 'oidc') return roleFor(grant.identity, config);
  // A one-time link makes the local admin, and only while the console has no identity provider.
  if (grant?.via === 'link') return config.oidc ? null : 'admin';
  return null; // a session from before grants were kept: signed in again
}

/**
 * Server-side sessions in the `console_sessions` table. The cookie holds a random id signed
 * with ZHINIAN_SESSION_SECRET (@fastify/cookie's HMAC); the table holds only the id's hash, so
 * a copy of the database opens no session. The lifetime is absolute (ZHINIAN_SESSION_TTL_SECONDS
 * after sign-in): activity does not extend it.
 */
export function createSessions(opts: { handle: DbHandle; ttlMs: number; secure: boolean; clock: Clock; console: ConsoleConfig }): Sessions {
  const { db } = opts.handle;
  const name = opts.secure ? HOST_SESSION_COOKIE : SESSION_COOKIE;
  const cookieOptions = { path: opts.secure ? '/' : CONSOLE_PATH, httpOnly: true, sameSite: 'lax' as const, secure: opts.secure, signed: true };

  function sessionIdOf(request: FastifyRequest): string | null {
    const raw = request.cookies[name];
    if (raw === undefined || raw.length > 512) return null;
    const unsigned = request.unsignCookie(raw);
    return unsigned.valid && unsigned.value !== null ? unsigned.value : null;
  }

  const summary = (row: { data: string; expires_at: number; created_at: number | null }): SessionSummary => {
    const stored = JSON.parse(row.data) as StoredSession;
    return { user: stored.user, via: stored.grant?.via ?? 'link', createdAt: row.created_at === null ? null : Number(row.created_at), expiresAt: Number(row.expires_at) };
  };

  return {
    secure: opts.secure,
    cookieCount(request) {
      const header = request.headers.cookie;
      if (typeof header !== 'string') return 0;
      let count = 0;
      for (const pair of header.split(';')) if (pair.slice(0, pair.indexOf('=')).trim() === name) count++;
      return count;
    },
    async load(request) {
      const id = sessionIdOf(request);
      if (id === null) return null;
      const key = sha256(id);
      const row = await db.selectFrom('console_sessions').select(['data', 'expires_at']).where('id', '=', key).executeTakeFirst();
      if (!row || Number(row.expires_at) <= opts.clock.now()) return null;
      const stored = JSON.parse(row.data) as StoredSession;
      const role = roleOfGrant(stored.grant, opts.console);
      if (role === null) {
        await db.deleteFrom('console_sessions').where('id', '=', key).execute();
        return null;
      }
      if (role !== stored.user.role) {
        stored.user = { ...stored.user, role };
        await db
          .updateTable('console_sessions')
          .set({ data: JSON.stringify(stored) })
          .where('id', '=', key)
          .execute();
      }
      return { user: stored.user, csrfToken: stored.csrfToken, expiresAt: Number(row.expires_at) };
    },
    async start(reply, user, grant) {
      const id = randomBytes(32).toString('base64url');
      const now = opts.clock.now();
      const session: ConsoleSession = { user, csrfToken: randomBytes(24).toString('base64url'), expiresAt: now + opts.ttlMs };
      const stored: StoredSession = { user, csrfToken: session.csrfToken, grant };
      await db
        .insertInto('console_sessions')
        .values({ id: sha256(id), data: JSON.stringify(stored), expires_at: session.expiresAt, user_key: user.email, created_at: now })
        .execute();
      // Ended sessions are deleted at sign-out; expired ones are swept here, at the next sign-in.
      await db.deleteFrom('console_sessions').where('expires_at', '<=', now).execute();
      reply.setCookie(name, id, { ...cookieOptions, maxAge: Math.floor(opts.ttlMs / 1000) });
      return session;
    },
    async end(request, reply) {
      const id = sessionIdOf(request);
      if (id !== null) await db.deleteFrom('console_sessions').where('id', '=', sha256(id)).execute();
      reply.clearCookie(name, { path: cookieOptions.path, secure: opts.secure });
    },
    clearCookies(reply) {
      reply.clearCookie(name, { path: cookieOptions.path, secure: opts.secure });
    },
    async list(limit) {
      const rows = await db
        .selectFrom('console_sessions')
        .select(['data', 'expires_at', 'created_at'])
        .where('expires_at', '>', opts.clock.now())
        .orderBy('expires_at', 'desc')
        .limit(limit)
        .execute();
      return rows.map(summary);
    },
    async endAll(userKey, tx = db) {
      let query = tx.deleteFrom('console_sessions');
      if (userKey !== null) query = query.where('user_key', '=', userKey);
      const deleted = await query.executeTakeFirst();
      return Number(deleted.numDeletedRows);
    },
  };
}

/** Constant-time comparison of a presented CSRF token with the session's. */
export function csrfMatches(presented: unknown, expected: string): boolean {
  if (typeof presented !== 'string' || presented.length !== expected.length) return false;
  return timingSafeEqual(Buffer.from(presented), Buffer.from(expected));
}
