import rateLimit, { type FastifyRateLimitStore } from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ClientDirectory } from '../clients/index.ts';
import type { Db } from '../db/index.ts';
import { createSlotTaker, LimitExceeded, WINDOW_MS } from '../jobs/rate-limit.ts';
import type { Clock } from '../lib/clock.ts';

/**
 * `ZHINIAN_RATE_LIMIT_REQUESTS_PER_MINUTE` (or the client's own value from the `clients`
 * table): every `/api/v1` request authenticated by a key counts for its client, in the same
 * sliding-minute windows of the database as the job-creation limit (scope `requests`), so the
 * limit holds across all API instances; a process counts a client's concurrent requests with
 * one statement (createSlotTaker). @fastify/rate-limit does the rest: its route hook runs
 * after our access control (route-level `onRequest` hooks follow the app's), and it sets
 * `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds: see SlotTake) on
 * every counted answer, plus `Retry-After` on a 429, whose `{ error, code }` body our error
 * handler writes.
 *
 * Not counted, and without these headers: public routes, answers refused before a client is
 * known (401, unknown routes), downloads through a signed link (which names an asset, not a
 * client: finding its owner would cost a query), and clients whose limit is 0 (unlimited),
 * for which the database is not touched at all.
 */
export async function registerRequestLimit(app: FastifyInstance, deps: { db: Db; clients: ClientDirectory; clock: Clock }): Promise<void> {
  // The limit a request was counted against, read once (a settings reload in between must not change it).
  const limitOf = new WeakMap<FastifyRequest, number>();
  const take = createSlotTaker(deps.db, 'requests', () => deps.clock.now());

  /** The plugin's store, on `rate_windows`: `current` is the sliding count rounded up, or over `max` when refused. */
  class DatabaseStore implements FastifyRateLimitStore {
    incr(clientId: string, callback: (error: Error | null, result?: { current: number; ttl: number }) => void, _timeWindow: number, max: number): void {
      take(clientId, max).then(
        (slot) => callback(null, { current: slot.allowed ? max - slot.remaining : max + 1, ttl: slot.resetSeconds * 1000 }),
        (error: Error) => callback(error),
      );
    }
    child(): FastifyRateLimitStore {
      return this;
    }
  }

  await app.register(rateLimit, {
    global: true,
    hook: 'onRequest',
    enableDraftSpec: true,
    timeWindow: WINDOW_MS,
    store: DatabaseStore,
    keyGenerator: (request) => request.clientId ?? '',
    allowList: async (request) => {
      if (request.clientId === null) return true;
      const limit = (await deps.clients.settingsOf(request.clientId)).rateLimitRequestsPerMinute;
      limitOf.set(request, limit);
      return limit <= 0;
    },
    max: (request) => limitOf.get(request)!,
    // A store failure is the database's: the request fails as any query of it would (500, logged).
    skipOnError: false,
    errorResponseBuilder: (_request, context) => new LimitExceeded(context.max, Math.ceil(context.ttl / 1000), 'requests'),
  });

  // A refusal by the job-creation limit says which limit it was, as the request limit's do.
  app.addHook('onError', async (_request, reply, error) => {
    if (error instanceof LimitExceeded) {
      reply.header('ratelimit-limit', error.limit).header('ratelimit-remaining', 0).header('ratelimit-reset', error.retryAfterSeconds);
    }
  });
}
