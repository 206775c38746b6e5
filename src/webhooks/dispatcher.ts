import type { Logger } from 'pino';
import type { Notifier } from '../lib/notifier.ts';
import { startPump, type Pump } from '../lib/pump.ts';
import { attemptDelivery, claimDueDelivery, type DeliveryOptions } from './deliver.ts';

/** Sends due webhooks, several at once, woken in-process when a job in this process finishes. */
export function startWebhookDispatcher(
  opts: DeliveryOptions & { notifier: Notifier; logger: Logger; pollIntervalMs: number; concurrency?: number },
): Pump {
  return startPump({
    concurrency: opts.concurrency ?? 16,
    pollIntervalMs: Math.max(opts.pollIntervalMs, 250),
    next: () => claimDueDelivery(opts),
    run: async (delivery) => {
      const outcome = await attemptDelivery(opts, delivery);
      opts.logger.info({ deliveryId: delivery.id, jobId: delivery.job_id, event: delivery.event, attempt: delivery.attempts, outcome }, 'webhook attempt');
    },
    subscribe: (wake) => opts.notifier.on('webhookDue', wake),
    onError: (error) => opts.logger.error({ err: error }, 'webhook dispatcher error'),
  });
}
