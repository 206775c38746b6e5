import type { Tx } from '../db/index.ts';
import { newId } from '../lib/ids.ts';
import { originOf } from './endpoints.ts';

export const WEBHOOK_EVENTS = ['generation.succeeded', 'generation.failed', 'generation.expired', 'generation.cancelled'] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];

/**
 * Records a webhook in the same transaction as the job's terminal transition, so a crash can
 * never leave a finished job without its event (or an event without its job). The body is
 * serialised once here: every attempt sends, and signs, these exact bytes.
 */
export async function enqueueWebhook(tx: Tx, input: { jobId: string; clientId: string; url: string; event: WebhookEvent; job: unknown; now: number }): Promise<void> {
  await tx
    .insertInto('webhook_deliveries')
    .values({
      id: newId('whd'),
      job_id: input.jobId,
      client_id: input.clientId,
      event: input.event,
      url: input.url,
      payload: JSON.stringify({ event: input.event, job: input.job, clientId: input.clientId }),
      status: 'pending',
      attempts: 0,
      next_attempt_at: input.now,
      lease_owner: null,
      last_status_code: null,
      last_error: null,
      created_at: input.now,
      delivered_at: null,
      origin: originOf(input.url),
      held_due_at: null,
    })
    .onConflict((oc) => oc.columns(['job_id', 'event']).doNothing())
    .execute();
}
