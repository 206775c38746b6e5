import type { FastifyInstance } from 'fastify';
import type { JobService } from '../../jobs/index.ts';
import type { LiveStatus } from '../../live/index.ts';
import { waitForEnd } from '../prefer-wait.ts';
import { clientOf } from '../auth.ts';

export function registerJobRoutes(app: FastifyInstance, jobs: JobService, live: LiveStatus): void {
  app.post('/api/v1/jobs', async (request, reply) => {
    const key = request.headers['idempotency-key'];
    const clientId = clientOf(request);
    const result = await jobs.create(clientId, request.body, Array.isArray(key) ? key[0] : key);
    const job = await waitForEnd(live, request, reply, result.job, () => jobs.watched(clientId, result.job.id));
    return reply.status(result.reused ? 200 : 201).send({ ...result, job });
  });

  app.get<{ Params: { id: string } }>('/api/v1/jobs/:id', async (request, reply) => {
    const clientId = clientOf(request);
    const job = await jobs.get(clientId, request.params.id);
    return { job: await waitForEnd(live, request, reply, job, () => jobs.watched(clientId, job.id)) };
  });

  app.get('/api/v1/jobs', async (request) => jobs.list(clientOf(request), request.query));

  app.post<{ Params: { id: string } }>('/api/v1/jobs/:id/cancel', async (request) => ({
    job: await jobs.cancel(clientOf(request), request.params.id),
  }));
}
