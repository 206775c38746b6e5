import type { Logger } from 'pino';
import type { Notifier } from '../lib/notifier.ts';
import { startPump, type Pump } from '../lib/pump.ts';
import { attemptDelivery, claimDueDelivery, type DeliveryOptions } from './deliver.ts';

/** Sends due webhooks, several at once, woken in-process when a job in this process finishes. */
export function startWebhookDispatcher(options: DeliveryOptions & { notifier: Notifier; logger: Logger; pollIntervalMs: number; concurrency?: number }): Pump {
  const opts = { ...options, onWarning: options.onWarning ?? ((message: string, details: Record<string, unknown>) => options.logger.warn(details, message)) };
  return startPump({
    concurrency: opts.concurrency ?? 16,
    pollIntervalMs: Math.max(opts.pollIntervalMs, 250),
    next: () => claimDueDelivery(opts),
    run: async (delivery) => {
      const outcome = await attemptDelivery(opts, delivery);
      const fields = { deliveryId: delivery.id, jobId: delivery.job_id, event: delivery.event, attempt: delivery.attempts, outcome };
      if (outcome === 'lost') opts.logger.warn(fields, 'webhook attempt not recorded: this process held the delivery past its lease and another took it over');
      else opts.logger.info(fields, 'webhook attempt');
    },
    subscribe: (wake) => opts.notifier.on('webhookDue', wake),
    onError: (error) => opts.logger.error({ err: error }, 'webhook dispatcher error'),
  });
}
