import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { withTransaction } from '../../db/transaction.ts';
import { iso } from '../../lib/clock.ts';
import { parseWith } from '../../lib/validate.ts';
import { recordAudit } from '../../audit/index.ts';
import type { ConsoleDeps } from '../deps.ts';
import { actorOf } from './clients.ts';

/** The session list shows this many at most (sessions last hours; a console has a handful of users). */
const MAX_LISTED_SESSIONS = 500;

const endSchema = z.union([z.object({ user: z.string().min(1).max(400) }).strict(), z.object({ all: z.literal(true) }).strict()]);

/**
 * Console sessions (`GET /admin/api/sessions`), and ending them: every session of one user
 * (`{ user }`: the e-mail or `sub:…` the list shows) or every session (`{ all: true }`, the
 * caller's own included). Audited; the answer says how many ended. A role taken away in the
 * settings needs none of this (sessions/roles are resolved again on every request); this is for
 * a stolen laptop or a departing colleague.
 */
export function registerSessionApi(admin: FastifyInstance, deps: ConsoleDeps): void {
  admin.get('/api/sessions', async () => {
    const sessions = await deps.sessions.list(MAX_LISTED_SESSIONS);
    return {
      sessions: sessions.map((s) => ({ user: s.user, via: s.via, createdAt: s.createdAt === null ? null : iso(s.createdAt), expiresAt: iso(s.expiresAt) })),
    };
  });
  admin.post('/api/sessions/end', async (request) => {
    const input = parseWith(endSchema, request.body ?? {});
    const user = 'user' in input ? input.user : null;
    const now = deps.clock.now();
    const ended = await withTransaction(deps.handle, async (tx) => {
      const count = await deps.sessions.endAll(user, tx);
      await recordAudit(tx, { actor: actorOf(request).email, action: 'session.end', target: user ?? '*', detail: { ended: count } }, now);
      return count;
    });
    return { ended };
  });
}
