import { request } from 'undici';
import { guardedDispatcher } from '../assets/fetch-url.ts';
import type { DbHandle, WebhookDeliveriesTable } from '../db/index.ts';
import { withTransaction } from '../db/index.ts';
import type { Clock } from '../lib/clock.ts';
import { signPayload } from './sign.ts';
import { MAX_DELIVERY_ATTEMPTS, retryDelayMs } from './schedule.ts';

export interface DeliveryOptions {
  handle: DbHandle;
  clock: Clock;
  /** Who holds a claimed delivery (worker id). */
  owner: string;
  secret: string | null;
  allowPrivateUrls: boolean;
  /** The receiver's whole answer must come within this (contract: 10 s). */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;
/** A claimed delivery whose sender died becomes due again after this: the attempt's time limit plus a margin. */
const CLAIM_MARGIN_MS = 5_000;

/**
 * Claims the next due delivery: its next_attempt_at moves past the attempt's time limit, so
 * another process only retries it if this one dies mid-send. The claim is a conditional
 * update, so two processes never send the same attempt.
 */
export async function claimDueDelivery(opts: DeliveryOptions): Promise<WebhookDeliveriesTable | null> {
  const { db } = opts.handle;
  const now = opts.clock.now();
  // Read first: idle senders poll, and a read never takes SQLite's write lock.
  const due = await db.selectFrom('webhook_deliveries').select('id').where('next_attempt_at', '<=', now).limit(1).executeTakeFirst();
  if (!due) return null;
  let next = db
    .selectFrom('webhook_deliveries')
    .select('id')
    .where('next_attempt_at', '<=', now)
    .orderBy('next_attempt_at')
    .limit(1);
  if (opts.handle.dialect === 'postgres') next = next.forUpdate().skipLocked();
  const row = await db
    .updateTable('webhook_deliveries')
    .set((eb) => ({ next_attempt_at: now + (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS) + CLAIM_MARGIN_MS, lease_owner: opts.owner, attempts: eb('attempts', '+', 1) }))
    .where('id', '=', next)
    .where('next_attempt_at', '<=', now)
    .returningAll()
    .executeTakeFirst();
  return row ?? null;
}

/** Sends one attempt and records its outcome. Never throws for receiver trouble. */
export async function attemptDelivery(opts: DeliveryOptions, delivery: WebhookDeliveriesTable): Promise<'delivered' | 'retry' | 'failed'> {
  const startedAt = opts.clock.now();
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': 'Zhinian-Webhooks/1',
    'x-zhinian-event': delivery.event,
    'x-zhinian-delivery': delivery.id,
  };
  if (opts.secret) headers['x-zhinian-signature'] = signPayload(opts.secret, delivery.payload);

  let statusCode: number | null = null;
  let error: string | null = null;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  try {
    const res = await request(delivery.url, {
      method: 'POST',
      headers,
      body: delivery.payload,
      dispatcher: guardedDispatcher({ allowPrivate: opts.allowPrivateUrls }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    statusCode = res.statusCode;
    // Receivers' bodies are ignored; drain so the connection can be reused.
    await res.body.dump({ limit: 64 * 1024 });
    if (statusCode < 200 || statusCode > 299) error = `receiver answered HTTP ${statusCode}`;
  } catch (e) {
    const err = e as Error & { code?: string };
    error = err.name === 'TimeoutError' || err.name === 'AbortError' ? `no answer within ${timeoutMs} ms` : `${err.code ?? err.name}: ${err.message}`;
  }
  const finishedAt = opts.clock.now();
  const outcome = error === null ? 'delivered' : delivery.attempts >= MAX_DELIVERY_ATTEMPTS ? 'failed' : 'retry';
  const delay = outcome === 'retry' ? retryDelayMs(delivery.attempts) ?? 0 : 0;

  await withTransaction(opts.handle, async (tx) => {
    await tx
      .insertInto('webhook_attempts')
      .values({
        delivery_id: delivery.id,
        attempt: delivery.attempts,
        started_at: startedAt,
        duration_ms: finishedAt - startedAt,
        status_code: statusCode,
        error: error?.slice(0, 500) ?? null,
      })
      .onConflict((oc) => oc.columns(['delivery_id', 'attempt']).doNothing())
      .execute();
    await tx
      .updateTable('webhook_deliveries')
      .set({
        status: outcome === 'retry' ? 'pending' : outcome,
        next_attempt_at: outcome === 'retry' ? finishedAt + delay : null,
        lease_owner: null,
        last_status_code: statusCode,
        last_error: error?.slice(0, 500) ?? null,
        delivered_at: outcome === 'delivered' ? finishedAt : null,
      })
      .where('id', '=', delivery.id)
      .where('lease_owner', '=', opts.owner)
      .execute();
  });
  return outcome;
}
