import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { DbHandle } from '../db/index.ts';
import type { Clock } from '../lib/clock.ts';

export type Role = 'admin' | 'viewer';

export interface ConsoleUser {
  email: string;
  name: string;
  role: Role;
}

export interface ConsoleSession {
  user: ConsoleUser;
  /** Sent back in `X-CSRF-Token` on every change. */
  csrfToken: string;
  /** Epoch ms: the session ends then, however active it is. */
  expiresAt: number;
}

/** The session cookie. Path /admin keeps it off `/api/v1` altogether. */
const SESSION_COOKIE = 'zhinian_console';
export const CONSOLE_PATH = '/admin';

export interface Sessions {
  /** The request's session, or null (no cookie, a tampered or unknown one, ended or expired). */
  load(request: FastifyRequest): Promise<ConsoleSession | null>;
  /** Signs `user` in: a new session (never one the browser brought along) and its cookie. */
  start(reply: FastifyReply, user: ConsoleUser): Promise<ConsoleSession>;
  /** Ends the request's session for good (its row is deleted: every instance refuses it) and clears the cookie. */
  end(request: FastifyRequest, reply: FastifyReply): Promise<void>;
  /** Cookie attributes (also used for the sign-in flow's own short-lived cookie). */
  readonly secure: boolean;
}

const sha256 = (value: string) => createHash('sha256').update(value).digest('hex');

/**
 * Server-side sessions in the `console_sessions` table. The cookie holds a random id signed
 * with ZHINIAN_SESSION_SECRET (@fastify/cookie's HMAC); the table holds only the id's hash, so
 * a copy of the database opens no session. The lifetime is absolute (ZHINIAN_SESSION_TTL_SECONDS
 * after sign-in): activity does not extend it.
 */
export function createSessions(opts: { handle: DbHandle; ttlMs: number; secure: boolean; clock: Clock }): Sessions {
  const { db } = opts.handle;
  const cookieOptions = { path: CONSOLE_PATH, httpOnly: true, sameSite: 'lax' as const, secure: opts.secure, signed: true };

  function sessionIdOf(request: FastifyRequest): string | null {
    const raw = request.cookies[SESSION_COOKIE];
    if (raw === undefined || raw.length > 512) return null;
    const unsigned = request.unsignCookie(raw);
    return unsigned.valid && unsigned.value !== null ? unsigned.value : null;
  }

  return {
    secure: opts.secure,
    async load(request) {
      const id = sessionIdOf(request);
      if (id === null) return null;
      const row = await db.selectFrom('console_sessions').select(['data', 'expires_at']).where('id', '=', sha256(id)).executeTakeFirst();
      if (!row || Number(row.expires_at) <= opts.clock.now()) return null;
      return { ...(JSON.parse(row.data) as Omit<ConsoleSession, 'expiresAt'>), expiresAt: Number(row.expires_at) };
    },
    async start(reply, user) {
      const id = randomBytes(32).toString('base64url');
      const now = opts.clock.now();
      const session: ConsoleSession = { user, csrfToken: randomBytes(24).toString('base64url'), expiresAt: now + opts.ttlMs };
      await db
        .insertInto('console_sessions')
        .values({ id: sha256(id), data: JSON.stringify({ user: session.user, csrfToken: session.csrfToken }), expires_at: session.expiresAt })
        .execute();
      // Ended sessions are deleted at sign-out; expired ones are swept here, at the next sign-in.
      await db.deleteFrom('console_sessions').where('expires_at', '<=', now).execute();
      reply.setCookie(SESSION_COOKIE, id, { ...cookieOptions, maxAge: Math.floor(opts.ttlMs / 1000) });
      return session;
    },
    async end(request, reply) {
      const id = sessionIdOf(request);
      if (id !== null) await db.deleteFrom('console_sessions').where('id', '=', sha256(id)).execute();
      reply.clearCookie(SESSION_COOKIE, { path: CONSOLE_PATH });
    },
  };
}

/** Constant-time comparison of a presented CSRF token with the session's. */
export function csrfMatches(presented: unknown, expected: string): boolean {
  if (typeof presented !== 'string' || presented.length !== expected.length) return false;
  return timingSafeEqual(Buffer.from(presented), Buffer.from(expected));
}
