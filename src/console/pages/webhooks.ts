import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from '../deps.ts';
import { DELIVERY_STATUSES, failingEndpoints, listDeliveries, parseDeliveryFilter } from '../queries/webhooks.ts';
import { filterErrorOf } from './filter-error.ts';
import type { Render } from '../render.ts';
import { titleOf } from './admin-screens.ts';

/** `/admin/webhooks?clientId&status&before`: receivers in trouble, then deliveries across clients (failing first) with their attempts. */
export function registerWebhookPage(admin: FastifyInstance, deps: ConsoleDeps, render: Render): void {
  admin.get('/webhooks', async (request, reply) => {
    const q = request.query as Record<string, unknown>;
    const s = (v: unknown) => (typeof v === 'string' ? v : '');
    const form = { clientId: s(q.clientId), status: s(q.status) };
    const now = deps.clock.now();
    let error: string | null = null;
    let page: Awaited<ReturnType<typeof listDeliveries>> = { deliveries: [], nextBefore: null };
    try {
      page = await listDeliveries(deps.handle, parseDeliveryFilter(q), now);
    } catch (e) {
      error = filterErrorOf(e);
      reply.status(400);
    }
    return render(reply, request, 'webhooks', {
      nav: 'webhooks',
      title: titleOf(request, 'wh.title'),
      error,
      form,
      statuses: DELIVERY_STATUSES,
      endpoints: await failingEndpoints(deps.handle, now),
      deliveries: page.deliveries,
      nextBefore: page.nextBefore,
      paged: s(q.before) !== '',
      keep: { ...form, limit: s(q.limit) },
    });
  });
}
