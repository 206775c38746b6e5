import type { FastifyInstance } from 'fastify';
import type { JobDeliveries } from '../../webhooks/index.ts';
import { clientOf } from '../auth.ts';

/** A job's webhook deliveries, for the partner who receives them: see every attempt, redeliver one. */
export function registerDeliveryRoutes(app: FastifyInstance, deliveries: JobDeliveries): void {
  app.get<{ Params: { id: string } }>('/api/v1/jobs/:id/deliveries', async (request) => ({
    deliveries: await deliveries.list(clientOf(request), request.params.id),
  }));

  app.post<{ Params: { id: string; deliveryId: string } }>('/api/v1/jobs/:id/deliveries/:deliveryId/redeliver', async (request, reply) => {
    const delivery = await deliveries.redeliver(clientOf(request), request.params.id, request.params.deliveryId);
    return reply.status(202).send({ delivery });
  });
}
