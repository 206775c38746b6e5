/**
 * The webhook retry schedule: WEBHOOK_SCHEDULE_SECONDS, declared with every other ladder in
 * lib/retry-ladders.ts (5 s at first, hours apart later, ±20% jitter, about 32 h in all).
 */
import { WEBHOOK_SCHEDULE_SECONDS, webhookRetryDelayMs } from '../lib/retry-ladders.ts';

/** Total tries: the first, then one per delay. */
export const MAX_DELIVERY_ATTEMPTS = WEBHOOK_SCHEDULE_SECONDS.length + 1;

/** Milliseconds to wait after failed attempt number `attempt` (1-based), or null when out of tries. */
export const retryDelayMs = webhookRetryDelayMs;
