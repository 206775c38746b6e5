import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from '../deps.ts';
import { listAudit, parseAuditFilter } from '../queries/audit.ts';

/** `GET /admin/api/audit?limit&before`: every change made in the console, newest first. */
export function registerAuditApi(admin: FastifyInstance, deps: ConsoleDeps): void {
  admin.get('/api/audit', async (request) => listAudit(deps.handle, parseAuditFilter(request.query)));
}
