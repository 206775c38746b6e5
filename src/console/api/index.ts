import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from '../deps.ts';
import { registerAuditApi } from './audit.ts';
import { registerClientApi } from './clients.ts';
import { registerDeliveryApi } from './deliveries.ts';
import { registerJobEventApi } from './job-events.ts';
import { registerJobApi } from './jobs.ts';
import { registerSessionApi } from './sessions.ts';
import { registerUsageApi } from './usage.ts';

/** The console's JSON API under /admin/api (CONTRACT "Browser console"). */
export function registerConsoleApi(admin: FastifyInstance, deps: ConsoleDeps): void {
  admin.get('/api/me', async (request) => {
    const session = request.consoleSession!;
    return { user: session.user, csrfToken: session.csrfToken };
  });
  registerClientApi(admin, deps);
  registerJobApi(admin, deps);
  registerJobEventApi(admin, deps);
  registerUsageApi(admin, deps);
  registerAuditApi(admin, deps);
  registerDeliveryApi(admin, deps);
  registerSessionApi(admin, deps);
}
