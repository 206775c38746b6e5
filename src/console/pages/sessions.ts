import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from '../deps.ts';
import type { Render } from '../render.ts';
import { titleOf } from './admin-screens.ts';

/** Sessions listed on the page at most (they last hours; a console has a handful of users). */
const MAX_LISTED = 500;

/**
 * `/admin/sessions`: who is signed in, grouped by user, with buttons (admins) to end one user's
 * sessions or every session; both post to `/admin/api/sessions/end`, which audits them.
 */
export function registerSessionsPage(admin: FastifyInstance, deps: ConsoleDeps, render: Render): void {
  admin.get('/sessions', async (request, reply) => {
    const sessions = await deps.sessions.list(MAX_LISTED);
    const byUser = new Map<string, { user: (typeof sessions)[number]['user']; via: string; count: number; lastSignIn: number | null; expiresAt: number }>();
    for (const s of sessions) {
      const seen = byUser.get(s.user.email);
      if (!seen) byUser.set(s.user.email, { user: s.user, via: s.via, count: 1, lastSignIn: s.createdAt, expiresAt: s.expiresAt });
      else {
        seen.count++;
        seen.lastSignIn = Math.max(seen.lastSignIn ?? 0, s.createdAt ?? 0) || null;
        seen.expiresAt = Math.max(seen.expiresAt, s.expiresAt);
      }
    }
    const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
    return render(reply, request, 'sessions', {
      nav: 'sessions',
      title: titleOf(request, 'sess.title'),
      users: [...byUser.values()].map((u) => ({ ...u, lastSignIn: iso(u.lastSignIn), expiresAt: iso(u.expiresAt), body: JSON.stringify({ user: u.user.email }) })),
      me: request.consoleSession?.user.email ?? '',
    });
  });
}
