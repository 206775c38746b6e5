import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { lastEventIdOf } from '../../api/routes/job-events.ts';
import { sendJobStream } from '../../api/job-stream.ts';
import { parseWith } from '../../lib/validate.ts';
import type { ConsoleDeps } from '../deps.ts';

/** The running rows of one page of the jobs list (its page size is at most 200). */
const MAX_IDS = 200;
const oneQuery = z.strictObject({ lastEventId: z.string().optional() });
const manyQuery = z.strictObject({ ids: z.string().min(1) });

/**
 * The console's live status, the same stream as the API's (api/job-stream.ts) for any
 * client's jobs, to any signed-in role:
 * - `GET /admin/api/jobs/:id/events`: one job (the job page);
 * - `GET /admin/api/jobs/events?ids=a,b,…`: several (the jobs list's running rows) on one
 *   connection, as a browser opens few connections per host. No resuming: a reconnect gets every
 *   job's state at once.
 */
export function registerJobEventApi(admin: FastifyInstance, deps: ConsoleDeps): void {
  const read = (id: string) => () => deps.jobs.watched(null, id);
  const owner = (email: string) => `console:${email}`;

  admin.get<{ Params: { id: string } }>('/api/jobs/:id/events', async (request, reply) => {
    const q = parseWith(oneQuery, request.query ?? {}, 'query parameter');
    const id = request.params.id;
    return sendJobStream(deps.live, request, reply, {
      owner: owner(request.consoleSession!.user.email),
      jobs: [{ id, read: read(id) }],
      lastEventId: lastEventIdOf(request.headers['last-event-id'], q.lastEventId),
    });
  });

  admin.get('/api/jobs/events', async (request, reply) => {
    const q = parseWith(manyQuery, request.query ?? {}, 'query parameter');
    const ids = [...new Set(q.ids.split(',').filter(Boolean))].slice(0, MAX_IDS);
    return sendJobStream(deps.live, request, reply, {
      owner: owner(request.consoleSession!.user.email),
      jobs: ids.map((id) => ({ id, read: read(id) })),
      lastEventId: null,
    });
  });
}
