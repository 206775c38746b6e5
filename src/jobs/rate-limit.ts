import type { Tx } from '../db/index.ts';
import { RateLimited } from '../lib/errors.ts';

/**
 * Job creations per client, at most `limit` in a sliding minute, counted in the database so
 * the limit holds across every API instance. The sliding count is estimated from two fixed
 * windows (the previous minute weighted by how much of it still overlaps, plus the current
 * one), which needs two small rows per client instead of a row per request, and never lets
 * through the double burst a plain fixed window allows at its boundary.
 */
export const WINDOW_MS = 60_000;

/** Requests in the sliding minute ending `elapsedMs` into the current window. */
export function slidingCount(previous: number, current: number, elapsedMs: number): number {
  return (previous * (WINDOW_MS - elapsedMs)) / WINDOW_MS + current;
}

/**
 * Seconds until one more request fits, if none is accepted meanwhile: later in this window
 * (the previous minute's weight fades), or in the next one when this window alone is full.
 */
export function retryAfterSeconds(previous: number, current: number, elapsedMs: number, limit: number): number {
  let waitMs: number;
  if (current + 1 <= limit) {
    // previous * (1 - (elapsed + t) / W) + current + 1 <= limit
    waitMs = WINDOW_MS * (1 - (limit - 1 - current) / previous) - elapsedMs;
  } else {
    // Next window: current * (1 - t' / W) + 1 <= limit
    waitMs = WINDOW_MS - elapsedMs + WINDOW_MS * (1 - (limit - 1) / current);
  }
  return Math.max(1, Math.ceil(waitMs / 1000));
}

/**
 * Counts one job creation for `clientId` inside the creating transaction, or returns the
 * RateLimited error to answer with (counting nothing) when it would exceed the limit; it is
 * returned, not thrown, so the other creations of the same group commit still go in. The count is raised first:
 * the upsert locks the client's row, so concurrent transactions (other instances) queue behind
 * it instead of both seeing the last free slot.
 */
export async function takeRateSlot(tx: Tx, clientId: string, now: number, limit: number): Promise<RateLimited | null> {
  const scope = 'jobs';
  const elapsed = now % WINDOW_MS;
  const windowStart = now - elapsed;
  const { count } = await tx
    .insertInto('rate_windows')
    .values({ scope, client_id: clientId, window_start: windowStart, count: 1 })
    .onConflict((oc) => oc.columns(['scope', 'client_id', 'window_start']).doUpdateSet((eb) => ({ count: eb('rate_windows.count', '+', 1) })))
    .returning('count')
    .executeTakeFirstOrThrow();
  const previous =
    (
      await tx
        .selectFrom('rate_windows')
        .select('count')
        .where('scope', '=', scope)
        .where('client_id', '=', clientId)
        .where('window_start', '=', windowStart - WINDOW_MS)
        .executeTakeFirst()
    )?.count ?? 0;
  if (slidingCount(previous, count, elapsed) <= limit) return null;
  await tx
    .updateTable('rate_windows')
    .set((eb) => ({ count: eb('count', '-', 1) }))
    .where('scope', '=', scope)
    .where('client_id', '=', clientId)
    .where('window_start', '=', windowStart)
    .execute();
  return new RateLimited(
    retryAfterSeconds(previous, count - 1, elapsed, limit),
    `Rate limit exceeded: at most ${limit} jobs per minute per client; retry after the Retry-After seconds.`,
  );
}
