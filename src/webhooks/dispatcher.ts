import type { Logger } from 'pino';
import type { Notifier } from '../lib/notifier.ts';
import { startPump, type Pump } from '../lib/pump.ts';
import { attemptDelivery, claimDueDelivery, type DeliveryOptions } from './deliver.ts';
import { clientShare } from './share.ts';

/**
 * Sends due webhooks, several at once, woken in-process when a job in this process finishes.
 * The pool is shared between clients (share.ts) and each receiver origin is limited across all
 * processes (endpoints.ts), so a slow or dead receiver never holds up deliveries to others.
 */
export function startWebhookDispatcher(options: DeliveryOptions & { notifier: Notifier; logger: Logger; pollIntervalMs: number; concurrency?: number }): Pump {
  const opts = { ...options, onWarning: options.onWarning ?? ((message: string, details: Record<string, unknown>) => options.logger.warn(details, message)) };
  const concurrency = opts.concurrency ?? 16;
  const share = clientShare(concurrency);
  const pump: Pump = startPump({
    concurrency,
    pollIntervalMs: Math.max(opts.pollIntervalMs, 250),
    next: async () => {
      const delivery = await claimDueDelivery(opts, share);
      if (delivery) share.took(delivery.client_id);
      return delivery;
    },
    run: async (delivery) => {
      try {
        const outcome = await attemptDelivery(opts, delivery);
        const fields = { deliveryId: delivery.id, jobId: delivery.job_id, event: delivery.event, attempt: delivery.attempts, outcome };
        if (outcome === 'lost') opts.logger.warn(fields, 'webhook attempt not recorded: this process held the delivery past its lease and another took it over');
        else opts.logger.info(fields, 'webhook attempt');
      } finally {
        share.done(delivery.client_id);
        // A slot is free, and the outcome may have let held deliveries of its origin go: claim
        // now rather than at the next poll (an idle claim only reads).
        pump.wake();
      }
    },
    subscribe: (wake) => opts.notifier.on('webhookDue', wake),
    onError: (error) => opts.logger.error({ err: error }, 'webhook dispatcher error'),
  });
  return pump;
}
