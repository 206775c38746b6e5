import type { DbHandle } from '../db/index.ts';
import type { Clock } from '../lib/clock.ts';
import { NotFound } from '../lib/errors.ts';
import { isId } from '../lib/ids.ts';
import type { Notifier } from '../lib/notifier.ts';
import { deliveriesOfJob, type DeliveryView } from './delivery-view.ts';
import { redeliverNow } from './redeliver.ts';

export interface JobDeliveriesDeps {
  handle: DbHandle;
  clock: Clock;
  /** Wakes the senders (this process's, and on PostgreSQL the others') when a redelivery is due. */
  notifier: Notifier;
}

export type JobDeliveries = ReturnType<typeof createJobDeliveries>;

/**
 * A client's view of its own jobs' webhook deliveries (the open API): list them with their
 * attempts, and redeliver one. Another client's job, or a delivery of another job, is NotFound,
 * exactly as a missing one: a client cannot learn that someone else's id exists.
 */
export function createJobDeliveries(deps: JobDeliveriesDeps) {
  const { handle, clock, notifier } = deps;

  async function ownJob(clientId: string, jobId: string): Promise<void> {
    const job = isId('job', jobId) ? await handle.db.selectFrom('jobs').select('id').where('id', '=', jobId).where('client_id', '=', clientId).executeTakeFirst() : undefined;
    if (!job) throw new NotFound('Job');
  }

  return {
    async list(clientId: string, jobId: string): Promise<DeliveryView[]> {
      await ownJob(clientId, jobId);
      return deliveriesOfJob(handle.db, jobId, clock.now());
    },

    /** One more attempt now, under the same delivery id, whatever the delivery's status (redeliverNow). */
    async redeliver(clientId: string, jobId: string, deliveryId: string): Promise<DeliveryView> {
      await ownJob(clientId, jobId);
      const owned = isId('whd', deliveryId)
        ? await handle.db
            .selectFrom('webhook_deliveries')
            .select('id')
            .where('id', '=', deliveryId)
            .where('job_id', '=', jobId)
            .where('client_id', '=', clientId)
            .executeTakeFirst()
        : undefined;
      if (!owned) throw new NotFound('Delivery');
      const done = await redeliverNow(handle, deliveryId, clock.now());
      if (!done) throw new NotFound('Delivery');
      if (done.outcome === 'due') notifier.webhookDue();
      const [delivery] = await deliveriesOfJob(handle.db, jobId, clock.now(), deliveryId);
      if (!delivery) throw new NotFound('Delivery');
      return delivery;
    },
  };
}
