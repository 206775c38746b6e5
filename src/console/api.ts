import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from './deps.ts';

/** The console's JSON API under /admin/api (CONTRACT "Browser console"). */
export function registerConsoleApi(admin: FastifyInstance, _deps: ConsoleDeps): void {
  admin.get('/api/me', async (request) => {
    const session = request.consoleSession!;
    return { user: session.user, csrfToken: session.csrfToken };
  });
}
