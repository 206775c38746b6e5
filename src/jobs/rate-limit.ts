import type { Tx } from '../db/index.ts';
import { RateLimited } from '../lib/errors.ts';

/**
 * Per-client limits of at most `limit` in a sliding minute, counted in the database
 * (`rate_windows`) so they hold across every API instance: job creations (scope `jobs`, counted
 * inside the create transaction) and `/api/v1` requests (scope `requests`, api/request-limit.ts).
 * The sliding count is estimated from two fixed windows (the previous minute weighted by how
 * much of it still overlaps, plus the current one), which needs two small rows per client and
 * scope instead of a row per request, and never lets through the double burst a plain fixed
 * window allows at its boundary. Rows older than the previous window are purged (forgetOldRateWindows, hourly: purge.ts).
 */
export const WINDOW_MS = 60_000;

/** What a `rate_windows` row counts. */
type RateScope = 'jobs' | 'requests';

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

/** The outcome of one take. */
export interface SlotTake {
  /** Whether it fitted (and was counted); a refusal counts nothing. */
  allowed: boolean;
  /** How many more fit now, after this one (0 when refused). */
  remaining: number;
  /**
   * Seconds until one more fits than `remaining` says, if nothing more is counted meanwhile:
   * when refused, the Retry-After; after the last free slot, when the next one frees.
   */
  resetSeconds: number;
}

/**
 * Counts requests of `clientId` in `scope` at `now`, one per entry of `limits` (each request's
 * limit, > 0), in order, each unless it would exceed its limit. One statement raises the
 * current window's count by all of them and reads the previous window's with it; if some do
 * not fit, a second one gives their counts back. The upsert is atomic (on PostgreSQL it locks
 * the row, so inside a transaction concurrent ones queue behind it): concurrent takes on any
 * number of instances never both get the last free slot, as the counts between the old and the
 * new value are this call's alone.
 */
async function takeSlots(db: Tx, scope: RateScope, clientId: string, now: number, limits: readonly number[]): Promise<SlotTake[]> {
  const elapsed = now % WINDOW_MS;
  const windowStart = now - elapsed;
  const n = limits.length;
  const row = await db
    .insertInto('rate_windows')
    .values({ scope, client_id: clientId, window_start: windowStart, count: n })
    .onConflict((oc) => oc.columns(['scope', 'client_id', 'window_start']).doUpdateSet((eb) => ({ count: eb('rate_windows.count', '+', n) })))
    .returning((eb) => [
      'count',
      eb
        .selectFrom('rate_windows as previous')
        .select('previous.count')
        .where('previous.scope', '=', scope)
        .where('previous.client_id', '=', clientId)
        .where('previous.window_start', '=', windowStart - WINDOW_MS)
        .as('previous'),
    ])
    .executeTakeFirstOrThrow();
  const previous = Number(row.previous ?? 0);
  const before = Number(row.count) - n;
  let count = before;
  const takes = limits.map((limit): SlotTake | null => {
    const sliding = slidingCount(previous, count + 1, elapsed);
    if (sliding > limit) return null;
    count++;
    const remaining = Math.floor(limit - sliding);
    // One more fits than now once the sliding count is down to limit - remaining - 1.
    return { allowed: true, remaining, resetSeconds: retryAfterSeconds(previous, count, elapsed, limit - remaining) };
  });
  const refused = n - (count - before);
  if (refused > 0) {
    await db
      .updateTable('rate_windows')
      .set((eb) => ({ count: eb('count', '-', refused) }))
      .where('scope', '=', scope)
      .where('client_id', '=', clientId)
      .where('window_start', '=', windowStart)
      .execute();
  }
  return takes.map((take, i) => take ?? { allowed: false, remaining: 0, resetSeconds: retryAfterSeconds(previous, count, elapsed, limits[i]) });
}

/** Counts one request of `clientId` in `scope` at `now`, unless that would exceed `limit` (> 0): see takeSlots. */
export async function takeSlot(db: Tx, scope: RateScope, clientId: string, now: number, limit: number): Promise<SlotTake> {
  return (await takeSlots(db, scope, clientId, now, [limit]))[0];
}

/**
 * `takeSlot` for many concurrent callers: the takes of one client made in the same turn of the
 * event loop, or while its previous statement is in flight, are counted by one statement (at
 * most one per client in flight per process). Under load that spares the database a write per
 * request, and on PostgreSQL the row lock every write of a client's row waits for.
 */
export function createSlotTaker(db: Tx, scope: RateScope, now: () => number): (clientId: string, limit: number) => Promise<SlotTake> {
  interface Waiting {
    limit: number;
    resolve(take: SlotTake): void;
    reject(error: unknown): void;
  }
  /** Clients with a statement scheduled or in flight, and the takes waiting for the next one. */
  const waiting = new Map<string, Waiting[]>();

  async function drain(clientId: string): Promise<void> {
    for (;;) {
      const batch = waiting.get(clientId)!;
      if (batch.length === 0) {
        waiting.delete(clientId);
        return;
      }
      waiting.set(clientId, []);
      try {
        const takes = await takeSlots(
          db,
          scope,
          clientId,
          now(),
          batch.map((w) => w.limit),
        );
        batch.forEach((w, i) => w.resolve(takes[i]));
      } catch (error) {
        for (const w of batch) w.reject(error);
      }
    }
  }

  return (clientId, limit) =>
    new Promise<SlotTake>((resolve, reject) => {
      const queue = waiting.get(clientId);
      if (queue) {
        queue.push({ limit, resolve, reject });
        return;
      }
      waiting.set(clientId, [{ limit, resolve, reject }]);
      // Started after this turn's other requests have queued theirs.
      setImmediate(() => void drain(clientId));
    });
}

/** A refusal by a sliding-minute limit: the 429 also carries RateLimit-Limit (api/request-limit.ts). */
export class LimitExceeded extends RateLimited {
  constructor(
    readonly limit: number,
    retryAfterSeconds: number,
    what: string,
  ) {
    super(retryAfterSeconds, `Rate limit exceeded: at most ${limit} ${what} per minute per client; retry after the Retry-After seconds.`);
  }
}

/**
 * Counts one job creation for `clientId` inside the creating transaction, or returns the
 * RateLimited error to answer with (counting nothing) when it would exceed the limit; it is
 * returned, not thrown, so the other creations of the same group commit still go in.
 */
export async function takeRateSlot(tx: Tx, clientId: string, now: number, limit: number): Promise<RateLimited | null> {
  const take = await takeSlot(tx, 'jobs', clientId, now, limit);
  return take.allowed ? null : new LimitExceeded(limit, take.resetSeconds, 'jobs');
}

/** Deletes the windows no take reads any more (only the current and the previous minute are read). */
export async function forgetOldRateWindows(db: Tx, now: number): Promise<void> {
  await db
    .deleteFrom('rate_windows')
    .where('window_start', '<', now - 2 * WINDOW_MS)
    .execute();
}
