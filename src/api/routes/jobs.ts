import type { FastifyInstance } from 'fastify';
import type { JobService } from '../../jobs/index.ts';
import { clientOf } from '../auth.ts';

export function registerJobRoutes(app: FastifyInstance, jobs: JobService): void {
  app.post('/api/v1/jobs', async (request, reply) => {
    const key = request.headers['idempotency-key'];
    const result = await jobs.create(clientOf(request), request.body, Array.isArray(key) ? key[0] : key);
    return reply.status(result.reused ? 200 : 201).send(result);
  });

  app.get<{ Params: { id: string } }>('/api/v1/jobs/:id', async (request) => ({ job: await jobs.get(clientOf(request), request.params.id) }));

  app.get('/api/v1/jobs', async (request) => jobs.list(clientOf(request), request.query));

  app.post<{ Params: { id: string } }>('/api/v1/jobs/:id/cancel', async (request) => ({
    job: await jobs.cancel(clientOf(request), request.params.id),
  }));
}
