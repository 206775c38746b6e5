import { sql } from 'kysely';
import type { DbHandle, Tx, WebhookDeliveriesTable } from '../db/index.ts';

/**
 * Every change to a `webhook_deliveries` row once the outbox (outbox.ts) has written it, one
 * named function each, so what may happen to a delivery is read in one place. The callers decide
 * when (deliver.ts: claims and outcomes; endpoints.ts: which rows wait for their origin;
 * redeliver.ts); these say how. A function given `tx` runs in the caller's transaction, under
 * whatever lock the caller took (lockDeliveryCounts).
 */

/** One claim: the delivery and the attempt number its claim counted. */
type Claim = Pick<WebhookDeliveriesTable, 'id' | 'attempts'>;

/**
 * Claims delivery `id` if it is still due: its next_attempt_at becomes the claim's lease end,
 * `owner` holds it, the attempt is counted, and a held-back row leaves its hold. A conditional
 * update: of two claims of one row, one gets it. Undefined: no longer due.
 */
export function claimIfDue(tx: Tx, id: string, now: number, owner: string, leaseEnd: number): Promise<WebhookDeliveriesTable | undefined> {
  return tx
    .updateTable('webhook_deliveries')
    .set((eb) => ({ next_attempt_at: leaseEnd, lease_owner: owner, attempts: eb('attempts', '+', 1), held_due_at: null }))
    .where('id', '=', id)
    .where('next_attempt_at', '<=', now)
    .returningAll()
    .executeTakeFirst();
}

/** The row of `claim` while `owner` still holds it (not taken over, not settled). */
const heldBy = (db: Tx, claim: Claim, owner: string) =>
  db.updateTable('webhook_deliveries').where('id', '=', claim.id).where('lease_owner', '=', owner).where('attempts', '=', claim.attempts);

/** Moves the lease of `owner`'s claim to `leaseEnd`; false: the claim is no longer ours. */
export async function renewClaim(db: DbHandle['db'], claim: Claim, owner: string, leaseEnd: number): Promise<boolean> {
  const res = await heldBy(db, claim, owner).set({ next_attempt_at: leaseEnd }).executeTakeFirst();
  return Number(res.numUpdatedRows) === 1;
}

/** How an attempt left its delivery (deliver.ts recordOutcome). */
type Settlement = Pick<WebhookDeliveriesTable, 'status' | 'next_attempt_at' | 'last_status_code' | 'last_error' | 'delivered_at'>;

/** Records an attempt's outcome on its delivery and ends the claim, only while `owner` holds it; false: it did not. */
export async function settleClaim(tx: Tx, claim: Claim, owner: string, settlement: Settlement): Promise<boolean> {
  const res = await heldBy(tx, claim, owner)
    .set({
      status: settlement.status,
      next_attempt_at: settlement.next_attempt_at,
      lease_owner: null,
      last_status_code: settlement.last_status_code,
      last_error: settlement.last_error,
      delivered_at: settlement.delivered_at,
    })
    .executeTakeFirst();
  return Number(res.numUpdatedRows) === 1;
}

/** Most due rows held back by one statement (the rest are held by the next claim that meets them). */
const HOLD_BATCH = 1_000;

/**
 * Holds `clientId`'s due deliveries to each origin back until its time at the latest (one
 * statement for them all). A due row with a lease is a lapsed claim (its sender died): the claim
 * is dropped with it, as a takeover would. Other clients' deliveries to the origin stay due.
 */
export async function holdBackDue(tx: Tx, clientId: string, until: ReadonlyMap<string, number>, now: number): Promise<void> {
  if (until.size === 0) return;
  const origins = [...until.keys()];
  const batch = tx
    .selectFrom('webhook_deliveries')
    .select('id')
    .where('origin', 'in', origins)
    .where('client_id', '=', clientId)
    .where('next_attempt_at', '<=', now)
    .limit(HOLD_BATCH);
  await tx
    .updateTable('webhook_deliveries')
    .set((eb) => ({
      held_due_at: eb.fn.coalesce('held_due_at', 'next_attempt_at'),
      next_attempt_at: sql<number>`case origin ${sql.join(
        [...until].map(([origin, at]) => sql`when ${origin} then ${at}`),
        sql` `,
      )} else next_attempt_at end`,
      lease_owner: null,
    }))
    .where('id', 'in', batch)
    .where('next_attempt_at', '<=', now)
    .execute();
}

/** `clientId`'s deliveries held back for `origin` are next looked at `until` (its block's end). */
export async function deferHeld(tx: Tx, clientId: string, origin: string, until: number): Promise<void> {
  await tx
    .updateTable('webhook_deliveries')
    .set({ next_attempt_at: until })
    .where('origin', '=', origin)
    .where('client_id', '=', clientId)
    .where('held_due_at', 'is not', null)
    .execute();
}

/** Lets up to `count` of `clientId`'s deliveries held back for `origin` go (earliest own due time first): due again at that time. How many went. */
export async function releaseHeld(tx: Tx, clientId: string, origin: string, count: number): Promise<number> {
  const next = tx
    .selectFrom('webhook_deliveries')
    .select('id')
    .where('origin', '=', origin)
    .where('client_id', '=', clientId)
    .where('held_due_at', 'is not', null)
    .orderBy('held_due_at')
    .limit(count);
  const res = await tx
    .updateTable('webhook_deliveries')
    .set((eb) => ({ next_attempt_at: eb.ref('held_due_at'), held_due_at: null }))
    .where('id', 'in', next)
    .executeTakeFirst();
  return Number(res.numUpdatedRows);
}

/** Makes delivery `id` pending and due at `now`, out of any hold, a lapsed claim dropped (redeliver.ts: the caller checked that no attempt is in flight). */
export function makeDueNow(tx: Tx, id: string, now: number): Promise<WebhookDeliveriesTable> {
  return tx
    .updateTable('webhook_deliveries')
    .set({ status: 'pending', next_attempt_at: now, held_due_at: null, lease_owner: null })
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirstOrThrow();
}
