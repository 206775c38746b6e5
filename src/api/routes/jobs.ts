import type { FastifyInstance } from 'fastify';
import type { JobService } from '../../jobs/index.ts';

export function registerJobRoutes(app: FastifyInstance, jobs: JobService): void {
  app.post('/api/v1/jobs', async (request, reply) => {
    const key = request.headers['idempotency-key'];
    const result = await jobs.create(request.clientId, request.body, Array.isArray(key) ? key[0] : key);
    return reply.status(result.reused ? 200 : 201).send(result);
  });

  app.get<{ Params: { id: string } }>('/api/v1/jobs/:id', async (request) => ({ job: await jobs.get(request.clientId, request.params.id) }));

  app.get('/api/v1/jobs', async (request) => jobs.list(request.clientId, request.query));

  app.post<{ Params: { id: string } }>('/api/v1/jobs/:id/cancel', async (request) => ({
    job: await jobs.cancel(request.clientId, request.params.id),
  }));
}
