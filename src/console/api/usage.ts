import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from '../deps.ts';
import { closeConsoleReader } from '../queries/reader.ts';
import { parseUsageFilter, usageRows } from '../queries/usage.ts';

/** `GET /admin/api/usage?from&to&clientId`: jobs per client × capability × engine × UTC day, by outcome, with output bytes. */
export function registerUsageApi(admin: FastifyInstance, deps: ConsoleDeps): void {
  admin.get('/api/usage', async (request) => {
    const filter = parseUsageFilter(request.query, deps.clock.now());
    return { rows: await usageRows(deps.handle, filter) };
  });
  // The console's reader (queries/reader.ts: its SQLite reader processes) ends with the server.
  admin.addHook('onClose', () => closeConsoleReader(deps.handle));
}
