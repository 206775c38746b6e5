import type { Selectable } from 'kysely';
import type { Database, Db, WebhookDeliveriesTable } from '../db/index.ts';
import { z } from 'zod';
import { iso } from '../lib/clock.ts';
import { WEBHOOK_EVENTS } from './outbox.ts';
import { MAX_DELIVERY_ATTEMPTS } from './schedule.ts';

/**
 * A delivery as partners (GET /api/v1/jobs/:id/deliveries) and the console's job page see it: the
 * one read model of a delivery row and its attempt rows. The console's webhooks screen adds
 * operator fields to it but takes the next attempt and the attempts from here. The schema is the
 * shape's one declaration: the type below and the OpenAPI document's `Delivery` come from it.
 */

export const DELIVERY_STATUSES = ['pending', 'delivered', 'failed'] as const;

const isoTime = z.string().describe('ISO 8601 UTC with milliseconds');

export const deliveryViewSchema = z.object({
  id: z.string().describe('whd_…: the webhook-id and X-Zhinian-Delivery of every attempt'),
  event: z.enum(WEBHOOK_EVENTS),
  url: z.string().describe("The job's webhookUrl"),
  status: z
    .enum(DELIVERY_STATUSES)
    .describe(
      `pending: an attempt is due or being made; delivered: a 2xx came; failed: given up (${MAX_DELIVERY_ATTEMPTS} attempts over at least 72 h, a 410 Gone, or a URL the URL guard refuses)`,
    ),
  createdAt: isoTime,
  nextAttemptAt: isoTime
    .nullable()
    .describe(
      "When the next attempt is due: the retry schedule's delay, or a 429/503's Retry-After (capped at 1 h) when that is longer. Null when delivered, failed, or while an attempt is being made.",
    ),
  attempts: z.array(
    z.object({
      at: isoTime.describe('When the attempt started'),
      statusCode: z.number().int().nullable().describe("The receiver's HTTP status; null: no answer (timeout, connection error, refused URL)"),
      durationMs: z.number().int(),
      error: z.string().nullable().describe('Why it failed (`receiver answered HTTP 500`, `no answer within 10000 ms`, …); null when delivered'),
    }),
  ),
});

export type DeliveryView = z.infer<typeof deliveryViewSchema>;

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
    event: row.event as DeliveryView['event'],
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
