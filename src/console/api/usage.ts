import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from '../deps.ts';
import { closeConsoleReader } from '../queries/reader.ts';
import { parseUsageFilter, usageJson } from '../queries/usage.ts';

/** `GET /admin/api/usage?from&to&clientId`: jobs per client × capability × engine × UTC day, by outcome, with output bytes. */
export function registerUsageApi(admin: FastifyInstance, deps: ConsoleDeps): void {
  admin.get('/api/usage', async (request, reply) => {
    const filter = parseUsageFilter(request.query, deps.clock.now());
    // The rows' JSON comes from the database as text (queries/usage.ts: usageJson).
    return reply.type('application/json; charset=utf-8').send(`{"rows":${await usageJson(deps.handle, filter)}}`);
  });
  // The console's reader (queries/reader.ts: its SQLite reader processes) ends with the server.
  admin.addHook('onClose', () => closeConsoleReader(deps.handle));
}
