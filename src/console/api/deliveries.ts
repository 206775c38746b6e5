import type { FastifyInstance } from 'fastify';
import { iso } from '../../lib/clock.ts';
import { isId } from '../../lib/ids.ts';
import { NotFound } from '../../lib/errors.ts';
import { redeliverNow } from '../../webhooks/redeliver.ts';
import { recordAudit } from '../../audit/index.ts';
import type { ConsoleDeps } from '../deps.ts';
import { deliveryById, failingEndpoints, listDeliveries, parseDeliveryFilter } from '../queries/webhooks.ts';
import { actorOf } from './clients.ts';

/**
 * Webhook deliveries across clients (failing first), the receivers in trouble, and redelivery:
 *  - `GET /admin/api/deliveries?clientId&status&limit&before` → `{ deliveries, nextBefore }`
 *  - `GET /admin/api/deliveries/:id` → `{ delivery }`
 *  - `GET /admin/api/webhook-endpoints` → `{ endpoints }`
 *  - `POST /admin/api/deliveries/:id/redeliver` → 202 `{ delivery }` (audited as `delivery.redeliver`)
 */
export function registerDeliveryApi(admin: FastifyInstance, deps: ConsoleDeps): void {
  admin.get('/api/deliveries', async (request) => listDeliveries(deps.handle, parseDeliveryFilter(request.query), deps.clock.now()));

  admin.get('/api/webhook-endpoints', async () => ({ endpoints: await failingEndpoints(deps.handle, deps.clock.now()) }));

  admin.get<{ Params: { id: string } }>('/api/deliveries/:id', async (request) => {
    const delivery = await deliveryById(deps.handle, request.params.id, deps.clock.now());
    if (!delivery) throw new NotFound('Delivery');
    return { delivery };
  });

  admin.post<{ Params: { id: string } }>('/api/deliveries/:id/redeliver', async (request, reply) => {
    const { id } = request.params;
    if (!isId('whd', id)) throw new NotFound('Delivery');
    const now = deps.clock.now();
    const actor = actorOf(request).email;
    const done = await redeliverNow(deps.handle, id, now, (tx, { before, outcome }) =>
      recordAudit(
        tx,
        {
          actor,
          action: 'delivery.redeliver',
          target: id,
          detail: {
            jobId: before.job_id,
            clientId: before.client_id,
            event: before.event,
            outcome,
            before: { status: before.status, attempts: Number(before.attempts), nextAttemptAt: iso(before.held_due_at ?? before.next_attempt_at) },
          },
        },
        now,
      ),
    );
    if (!done) throw new NotFound('Delivery');
    // Wakes this process's dispatcher (and, on PostgreSQL, the others'); otherwise polling finds it.
    if (done.outcome === 'due') deps.notifier.webhookDue();
    const delivery = await deliveryById(deps.handle, id, deps.clock.now());
    return reply.status(202).send({ delivery });
  });
}
