import type { Selectable } from 'kysely';
import type { DbHandle, Tx, WebhookDeliveriesTable } from '../db/index.ts';
import { withTransaction } from '../db/index.ts';
import { makeDueNow } from './delivery-rows.ts';
import { isInFlight } from './delivery-view.ts';
import { lockDeliveryCounts } from './endpoints.ts';

type DeliveryRow = Selectable<WebhookDeliveriesTable>;

/** What a redelivery did: `due` (set due now), or `inFlight` (an attempt is being sent right now: left as it is). */
export interface Redelivery {
  before: DeliveryRow;
  delivery: DeliveryRow;
  outcome: 'due' | 'inFlight';
}

/**
 * One more attempt of a delivery as soon as possible, with the same delivery id (so receivers
 * deduplicating by X-Zhinian-Delivery see the same event), whatever its status: pending,
 * delivered or failed. The claim query (deliver.ts) takes any row with `next_attempt_at <= now`,
 * so the row becomes `status = 'pending'`, `next_attempt_at = now`, `held_due_at = null`; the
 * claim then counts the attempt (`attempts + 1`), and one that fails after the last scheduled
 * try is `failed` again (no new retry ladder). Per-origin limits still apply: when its receiver is
 * at its in-flight cap or blocked, the next claim holds it back again, first in line.
 *
 * A delivery whose attempt is in flight (a lease that has not lapsed) is left alone: its
 * `lease_owner`/`next_attempt_at` belong to the sender, which records that attempt's outcome
 * (and schedules a retry if it fails). That attempt is the "as soon as possible" one; the answer
 * says `inFlight`. A lapsed lease (its sender died) is dropped, as a takeover by a claim would.
 *
 * `within` runs in the same transaction (e.g. the audit record). Null when there is no such delivery.
 */
export async function redeliverNow(handle: DbHandle, deliveryId: string, now: number, within?: (tx: Tx, result: Redelivery) => Promise<void>): Promise<Redelivery | null> {
  return withTransaction(handle, async (tx) => {
    // The same lock as claims and recorded outcomes: the in-flight check and the change are one step.
    await lockDeliveryCounts(handle, tx);
    const before = await tx.selectFrom('webhook_deliveries').selectAll().where('id', '=', deliveryId).executeTakeFirst();
    if (!before) return null;
    let result: Redelivery;
    if (isInFlight(before, now)) {
      result = { before, delivery: before, outcome: 'inFlight' };
    } else {
      result = { before, delivery: await makeDueNow(tx, deliveryId, now), outcome: 'due' };
    }
    await within?.(tx, result);
    return result;
  });
}
