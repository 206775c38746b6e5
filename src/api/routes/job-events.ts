import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { JobService } from '../../jobs/index.ts';
import type { LiveStatus } from '../../live/index.ts';
import { parseWith } from '../../lib/validate.ts';
import { clientOf } from '../auth.ts';
import { sendJobStream } from '../job-stream.ts';

const eventsQuerySchema = z.strictObject({ lastEventId: z.string().optional() });

/** A Last-Event-ID we sent is a job version; anything else is treated as no ID at all. */
export function lastEventIdOf(header: string | string[] | undefined, query: string | undefined): number | null {
  const given = (Array.isArray(header) ? header[0] : header) ?? query;
  return given !== undefined && /^\d{1,15}$/.test(given.trim()) ? Number(given.trim()) : null;
}

/** Ends every open event stream when the server shuts down (clients resume with Last-Event-ID). */
function endStreamsOnClose(app: FastifyInstance, live: LiveStatus): void {
  app.addHook('preClose', async () => {
    for (const end of [...live.closers]) end();
  });
}

/** `GET /api/v1/jobs/:id/events`: the job's live status as server-sent events (api/job-stream.ts). */
export function registerJobEventRoutes(app: FastifyInstance, jobs: JobService, live: LiveStatus): void {
  endStreamsOnClose(app, live);
  app.get<{ Params: { id: string } }>('/api/v1/jobs/:id/events', async (request, reply) => {
    const q = parseWith(eventsQuerySchema, request.query ?? {}, 'query parameter');
    const clientId = clientOf(request);
    const id = request.params.id;
    return sendJobStream(live, request, reply, {
      owner: `api:${clientId}`,
      jobs: [{ id, read: () => jobs.watched(clientId, id) }],
      lastEventId: lastEventIdOf(request.headers['last-event-id'], q.lastEventId),
    });
  });
}
