/**
 * Every wait-and-retry ladder in the service, declared once with the reason for its numbers, and
 * the small pure functions that read a step of it. Nothing here sleeps or reads a clock: callers
 * pass the attempt number (and, where a ladder is jittered, a `random` source tests can fix).
 * Tries and waits are 1-based: the wait before the n-th retry is step n.
 */

/** `random` as `Math.random` returns it: [0, 1). */
type Random = () => number;

/** first, 2×first, 4×first … capped at max. */
interface Doubling {
  firstMs: number;
  maxMs: number;
}

function doublingMs(ladder: Doubling, step: number): number {
  return Math.min(ladder.maxMs, ladder.firstMs * 2 ** (step - 1));
}

/** The `step`-th entry (1-based) of a list whose last entry repeats. */
function stepOf(list: readonly number[], step: number): number {
  return list[Math.min(step - 1, list.length - 1)]!;
}

// ---------------------------------------------------------------------------------------------
// Remote providers (worker/remote.ts)

/**
 * A rate limit without Retry-After: 2 s doubling to 60 s, each wait 50–100% of its step so workers
 * limited together do not come back together. There is no try limit: the job's deadline ends it.
 */
const PROVIDER_RATE_LIMIT: Doubling = { firstMs: 2_000, maxMs: 60_000 };

export function rateLimitWaitMs(limited: number, random: Random = Math.random): number {
  return doublingMs(PROVIDER_RATE_LIMIT, limited) * (0.5 + random() / 2);
}

/**
 * Transient provider trouble (5xx, timeouts, resets): 1, 2, 4… s with full jitter (0 to the step),
 * capped at 30 s, five tries in all; a timed-out submit, which may have created a task at a
 * provider without an idempotency key, is tried twice only.
 */
export const PROVIDER_TRANSIENT = { firstMs: 1_000, maxMs: 30_000, tries: 5, timedOutSubmitTries: 2 } as const;

export function transientWaitMs(failures: number, random: Random = Math.random): number {
  return random() * doublingMs(PROVIDER_TRANSIENT, failures);
}

/**
 * Polls that fail in a row (transient errors) before the job fails: at the slowest cadence (15 s)
 * that is minutes of provider trouble, short of the job timeout. Rate-limited polls do not count.
 */
export const POLL_FAILURE_LIMIT = 10;

/** Downloading a result: three tries, 1 s then 2 s apart (links are fresh; a blip, not an outage). */
export const OUTPUT_FETCH = { tries: 3, stepMs: 1_000 } as const;

export function outputFetchWaitMs(attempt: number): number {
  return OUTPUT_FETCH.stepMs * attempt;
}

/**
 * Seedance `QuotaExceeded` (free quota gone or too many tasks queued): 30 s, 1, 2, then 5 min
 * apart; [ours] after ~15 min of it the submit gives up with a permanent `quota_exceeded`. A job's
 * place on the ladder is forgotten after four times that, so the table never grows.
 */
export const SEEDANCE_QUOTA = { waitsMs: [30_000, 60_000, 120_000, 300_000], giveUpAfterMs: 15 * 60_000, forgetAfterMs: 4 * 15 * 60_000 } as const;

/** The wait after the `refusals`-th QuotaExceeded of one job (1-based). */
export function seedanceQuotaWaitMs(refusals: number): number {
  return stepOf(SEEDANCE_QUOTA.waitsMs, refusals);
}

/**
 * Jimeng 50430: every concurrency slot is busy, and one frees only when a task finishes (typically
 * 10–30 s), so a fixed 10 s wastes fewer calls than the 2 s first step of PROVIDER_RATE_LIMIT.
 * (50429, the QPS limit, takes PROVIDER_RATE_LIMIT.)
 */
export const JIMENG_BUSY_50430_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// Jobs (queue/decide.ts)

/**
 * A transient engine error waits this long before the job's next attempt (by attempt number, the
 * last repeating): long enough for a restart or failover, short against the job timeout.
 */
export const JOB_RETRY_DELAYS_MS = [2_000, 10_000, 30_000] as const;

export function jobRetryDelayMs(attempts: number): number {
  return stepOf(JOB_RETRY_DELAYS_MS, attempts);
}

// ---------------------------------------------------------------------------------------------
// Webhooks (webhooks/schedule.ts)

/**
 * Delay before each webhook retry, in seconds: quick at first for blips (5 s, 30 s, 2 min), then
 * hours apart, ending at 12 h. The delays add up to about 100 h (4 days and 4 h); each is
 * jittered by ±20% so retries from one outage spread out, so even at the shortest jitter they span
 * about 80 h, past the 72 h the contract promises, before a delivery is given up as failed.
 * 17 attempts in all (webhooks/schedule.ts MAX_DELIVERY_ATTEMPTS).
 */
export const WEBHOOK_SCHEDULE_SECONDS = [5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 43200, 43200, 43200, 43200, 43200, 43200, 43200] as const;

/** Jitter of each webhook delay: ±this fraction of it. */
export const WEBHOOK_JITTER = 0.2;

/**
 * The longest a receiver's `Retry-After` (on a 429 or 503) may push a delivery's next attempt
 * out: a receiver cannot park an event for days with one header, and an hour is longer than any
 * rate-limit window we know of.
 */
export const WEBHOOK_RETRY_AFTER_CAP_MS = 3_600_000;

/** Milliseconds to wait after failed delivery attempt `attempt` (1-based), or null when out of tries. */
export function webhookRetryDelayMs(attempt: number, random: Random = Math.random): number | null {
  const base = WEBHOOK_SCHEDULE_SECONDS[attempt - 1];
  if (base === undefined) return null;
  const jitter = 1 - WEBHOOK_JITTER + 2 * WEBHOOK_JITTER * random();
  return Math.round(base * 1000 * jitter);
}

// ---------------------------------------------------------------------------------------------
// Database outages (lib/pump.ts, db/postgres.ts, db/pg-notify.ts, webhooks/deliver.ts)

/**
 * The pause after the `failures`-th failure in a row to reach the database: 100 ms doubling to
 * 5 s, so an outage costs a log line every few seconds rather than a busy loop, and recovery is
 * noticed within seconds.
 */
const OUTAGE_BACKOFF: Doubling = { firstMs: 100, maxMs: 5_000 };

export function outageBackoffMs(failures: number): number {
  return doublingMs(OUTAGE_BACKOFF, failures);
}
