import type { Selectable } from 'kysely';
import type { Database, Db, WebhookDeliveriesTable } from '../db/index.ts';
import { iso } from '../lib/clock.ts';

/**
 * A delivery as partners (GET /api/v1/jobs/:id/deliveries) and the console's job page see it: the
 * one read model of a delivery row and its attempt rows. The console's webhooks screen adds
 * operator fields to it but takes the next attempt and the attempts from here.
 */
/** pending: an attempt is due (or being made); delivered: a 2xx came; failed: given up (schedule.ts settleAttempt). */
export const DELIVERY_STATUSES = ['pending', 'delivered', 'failed'] as const;

export interface DeliveryView {
  id: string;
  event: string;
  url: string;
  status: (typeof DELIVERY_STATUSES)[number];
  createdAt: string;
  /** When the next attempt is due (nextAttemptAt below); null when none is waiting. */
  nextAttemptAt: string | null;
  attempts: AttemptView[];
}

interface AttemptView {
  at: string;
  /** The receiver's HTTP status; null: no answer (timeout, connection error, refused target). */
  statusCode: number | null;
  durationMs: number;
  /** Why the attempt failed (`receiver answered HTTP 500`, `no answer within 10000 ms`, …); null when it was delivered. */
  error: string | null;
}

type DeliveryRow = Pick<Selectable<WebhookDeliveriesTable>, 'id' | 'event' | 'url' | 'status' | 'created_at' | 'next_attempt_at' | 'held_due_at' | 'lease_owner'>;
type AttemptRow = Selectable<Database['webhook_attempts']>;

/** An attempt is being sent right now: the delivery is claimed and the claim has not lapsed. */
export function isInFlight(row: Pick<DeliveryRow, 'lease_owner' | 'next_attempt_at'>, now: number): boolean {
  return row.lease_owner !== null && row.next_attempt_at !== null && Number(row.next_attempt_at) > now;
}

/**
 * When a pending delivery's next attempt is due (epoch ms), as the schedule (schedule.ts) or a
 * receiver's Retry-After set it: its own due time, also while it is held back for its receiver
 * (held_due_at; it waits in line there). Null when it is delivered or failed, or while an attempt
 * is in flight (that attempt's outcome decides what comes next).
 */
function nextAttemptAt(row: Pick<DeliveryRow, 'status' | 'next_attempt_at' | 'held_due_at' | 'lease_owner'>, now: number): number | null {
  if (row.status !== 'pending' || isInFlight(row, now)) return null;
  const due = row.held_due_at ?? row.next_attempt_at;
  return due === null ? null : Number(due);
}

export function toDeliveryView(row: DeliveryRow, attempts: readonly AttemptRow[], now: number): DeliveryView {
  const next = nextAttemptAt(row, now);
  return {
    id: row.id,
    event: row.event,
    url: row.url,
    status: row.status as DeliveryView['status'],
    createdAt: iso(Number(row.created_at)),
    nextAttemptAt: next === null ? null : iso(next),
    attempts: attempts
      .filter((a) => a.delivery_id === row.id)
      .map((a) => ({
        at: iso(Number(a.started_at)),
        statusCode: a.status_code === null ? null : Number(a.status_code),
        durationMs: Number(a.duration_ms),
        error: a.error,
      })),
  };
}

/** Every attempt of the given deliveries, by delivery then attempt number. */
export async function attemptsOf(db: Db, deliveryIds: readonly string[]): Promise<AttemptRow[]> {
  if (deliveryIds.length === 0) return [];
  return db
    .selectFrom('webhook_attempts')
    .selectAll()
    .where('delivery_id', 'in', [...deliveryIds])
    .orderBy('delivery_id')
    .orderBy('attempt')
    .execute();
}

/** A job's deliveries (oldest first) with their attempts; `deliveryId`: only that one. */
export async function deliveriesOfJob(db: Db, jobId: string, now: number, deliveryId?: string): Promise<DeliveryView[]> {
  let query = db.selectFrom('webhook_deliveries').selectAll().where('job_id', '=', jobId);
  if (deliveryId !== undefined) query = query.where('id', '=', deliveryId);
  const rows = await query.orderBy('id').execute();
  const attempts = await attemptsOf(
    db,
    rows.map((r) => r.id),
  );
  return rows.map((r) => toDeliveryView(r, attempts, now));
}
