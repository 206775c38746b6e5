/**
 * What happens to a delivery after an attempt: one pure function (settleAttempt) over the retry
 * schedule, WEBHOOK_SCHEDULE_SECONDS, declared with every other ladder in lib/retry-ladders.ts
 * (5 s at first, 12 h apart later, ±20% jitter, at least 72 h in all).
 */
import { WEBHOOK_RETRY_AFTER_CAP_MS, WEBHOOK_SCHEDULE_SECONDS, webhookRetryDelayMs } from '../lib/retry-ladders.ts';

/** Total tries: the first, then one per delay. */
export const MAX_DELIVERY_ATTEMPTS = WEBHOOK_SCHEDULE_SECONDS.length + 1;

/** Milliseconds to wait after failed attempt number `attempt` (1-based), or null when out of tries. */
export const retryDelayMs = webhookRetryDelayMs;

/** The shape every HTTP-date form shares (RFC 9110 §5.6.7). */
const HTTP_DATE = /^[A-Za-z]{3,9},? .*\b\d{2}:\d{2}:\d{2}\b/;

/** Answers whose Retry-After is honoured: the receiver asks us to slow down, or is briefly down. */
const RETRY_AFTER_STATUSES = new Set([429, 503]);

/**
 * A `Retry-After` value (RFC 9110: delay-seconds or an HTTP-date) as milliseconds from `now`,
 * capped at WEBHOOK_RETRY_AFTER_CAP_MS; a date already past is 0. Null when absent or not either
 * form (it is then ignored, as the RFC says).
 */
export function retryAfterMs(value: string | null | undefined, now: number): number | null {
  if (value == null) return null;
  const text = value.trim();
  let ms: number;
  if (/^\d+$/.test(text)) ms = Number(text) * 1000;
  else {
    // Its three forms (IMF-fixdate, RFC 850, asctime) open with the weekday and carry hh:mm:ss;
    // Date.parse alone would also take "-5" or "7 Dec".
    const at = HTTP_DATE.test(text) ? Date.parse(text) : Number.NaN;
    if (!Number.isFinite(at)) return null;
    ms = at - now;
  }
  return Math.min(WEBHOOK_RETRY_AFTER_CAP_MS, Math.max(0, ms));
}

/** What one attempt showed, as far as the delivery's future is concerned. */
export interface AttemptFacts {
  /** The attempt's number (1-based; a redelivery counts too). */
  attempt: number;
  /** The receiver answered 2xx. */
  delivered: boolean;
  /** The receiver's HTTP status; null: no (whole) answer. */
  statusCode: number | null;
  /** The URL guard refused the target (not public, bad scheme): nothing was sent. */
  refused: boolean;
  /** The answer's Retry-After header, as sent. */
  retryAfter: string | null;
  /** When the answer (or the failure) came. */
  answeredAt: number;
}

export type Settlement = { outcome: 'delivered' } | { outcome: 'failed'; reason: 'refused' | 'gone' | 'exhausted' } | { outcome: 'retry'; delayMs: number };

/**
 * The delivery's next step after an attempt:
 *  - 2xx: delivered.
 *  - the URL guard refused the target, or the receiver answered 410 Gone: failed at once; no
 *    retry can change either answer (a refused URL stays refused until the job is recreated).
 *  - the last scheduled attempt failed: failed.
 *  - otherwise a retry after the schedule's delay. A 429 or 503 with Retry-After waits at least
 *    that long (capped at 1 h): the longer of the two, never shorter than the schedule, since
 *    a receiver answering `Retry-After: 0` to every attempt would otherwise use up the ladder
 *    in minutes, and the contract promises at least 72 h of retries.
 */
export function settleAttempt(facts: AttemptFacts, random: () => number = Math.random): Settlement {
  if (facts.delivered) return { outcome: 'delivered' };
  if (facts.refused) return { outcome: 'failed', reason: 'refused' };
  if (facts.statusCode === 410) return { outcome: 'failed', reason: 'gone' };
  const scheduled = retryDelayMs(facts.attempt, random);
  if (scheduled === null) return { outcome: 'failed', reason: 'exhausted' };
  const asked = facts.statusCode !== null && RETRY_AFTER_STATUSES.has(facts.statusCode) ? retryAfterMs(facts.retryAfter, facts.answeredAt) : null;
  return { outcome: 'retry', delayMs: Math.max(scheduled, asked ?? 0) };
}
