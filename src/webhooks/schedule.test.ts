import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { WEBHOOK_JITTER, WEBHOOK_RETRY_AFTER_CAP_MS, WEBHOOK_SCHEDULE_SECONDS as RETRY_DELAYS_SECONDS } from '../lib/retry-ladders.ts';
import { type AttemptFacts, MAX_DELIVERY_ATTEMPTS, retryAfterMs, retryDelayMs, settleAttempt } from './schedule.ts';

const HOUR_MS = 3600 * 1000;

describe('webhook retry schedule', () => {
  test('delays never shrink and end far above where they start', () => {
    const mid = () => 0.5; // no jitter
    const delays = Array.from({ length: MAX_DELIVERY_ATTEMPTS - 1 }, (_, i) => retryDelayMs(i + 1, mid)!);
    for (let i = 1; i < delays.length; i++) assert.ok(delays[i] >= delays[i - 1], `delay ${i + 1} (${delays[i]}) < delay ${i} (${delays[i - 1]})`);
    // Strictly growing at the start, where a blip turns into an outage.
    for (let i = 1; i < 6; i++) assert.ok(delays[i] > delays[i - 1]);
    assert.equal(delays[0], RETRY_DELAYS_SECONDS[0] * 1000);
    assert.ok(delays.at(-1)! >= 100 * delays[0]);
  });

  test('the first retry comes after about 5 s, the second after about 30 s', () => {
    assert.equal(
      retryDelayMs(1, () => 0.5),
      5_000,
    );
    assert.equal(
      retryDelayMs(2, () => 0.5),
      30_000,
    );
  });

  test('jitter stays within ±20% of the base delay, at both extremes and at random', () => {
    for (let attempt = 1; attempt < MAX_DELIVERY_ATTEMPTS; attempt++) {
      const base = RETRY_DELAYS_SECONDS[attempt - 1] * 1000;
      assert.equal(
        retryDelayMs(attempt, () => 0),
        Math.round(base * 0.8),
      );
      assert.ok(retryDelayMs(attempt, () => 0.999_999)! <= base * 1.2);
      for (let i = 0; i < 200; i++) {
        const d = retryDelayMs(attempt)!;
        assert.ok(d >= base * 0.8 && d <= base * 1.2, `attempt ${attempt}: ${d} outside ${base} ±20%`);
      }
    }
  });

  test('jitter actually spreads retries out', () => {
    const seen = new Set(Array.from({ length: 50 }, () => retryDelayMs(3)));
    assert.ok(seen.size > 10, `only ${seen.size} distinct delays`);
  });

  test('retries span at least 72 h even when every delay is jittered to its shortest', () => {
    let total = 0;
    for (let attempt = 1; attempt < MAX_DELIVERY_ATTEMPTS; attempt++) total += retryDelayMs(attempt, () => 0)!;
    assert.ok(total >= 72 * HOUR_MS, `${total / HOUR_MS} h`);
    // The same from the declared ladder and its jitter, not only through the function.
    const base = RETRY_DELAYS_SECONDS.reduce((sum, s) => sum + s, 0) * 1000;
    assert.ok(base * (1 - WEBHOOK_JITTER) >= 72 * HOUR_MS, `${(base * (1 - WEBHOOK_JITTER)) / HOUR_MS} h`);
  });

  test('there is no delay after the last attempt', () => {
    assert.equal(MAX_DELIVERY_ATTEMPTS, RETRY_DELAYS_SECONDS.length + 1);
    assert.notEqual(retryDelayMs(MAX_DELIVERY_ATTEMPTS - 1), null);
    assert.equal(retryDelayMs(MAX_DELIVERY_ATTEMPTS), null);
    assert.equal(retryDelayMs(MAX_DELIVERY_ATTEMPTS + 5), null);
  });
});

describe('Retry-After', () => {
  const now = Date.parse('2026-12-07T12:00:00.000Z');

  test('delay-seconds and HTTP-dates are read as milliseconds from now', () => {
    assert.equal(retryAfterMs('20', now), 20_000);
    assert.equal(retryAfterMs(' 0 ', now), 0);
    assert.equal(retryAfterMs('Mon, 07 Dec 2026 12:00:30 GMT', now), 30_000);
    // RFC 850 and asctime, the obsolete forms a receiver may still send.
    assert.equal(retryAfterMs('Monday, 07-Dec-26 12:01:00 GMT', now), 60_000);
    assert.equal(retryAfterMs('Mon Dec  7 12:02:00 2026', now), 120_000);
  });

  test('a date already past waits nothing; absent or unreadable values are ignored', () => {
    assert.equal(retryAfterMs('Mon, 07 Dec 2026 11:00:00 GMT', now), 0);
    for (const value of [undefined, null, '', 'soon', '-5', '+5', '1.5', '20 s', '7 Dec']) assert.equal(retryAfterMs(value, now), null, String(value));
  });

  test('is capped at 1 h, in seconds and as a date', () => {
    assert.equal(WEBHOOK_RETRY_AFTER_CAP_MS, HOUR_MS);
    assert.equal(retryAfterMs('3600', now), HOUR_MS);
    assert.equal(retryAfterMs('86400', now), HOUR_MS);
    assert.equal(retryAfterMs('99999999999999999999', now), HOUR_MS);
    assert.equal(retryAfterMs('Tue, 08 Dec 2026 12:00:00 GMT', now), HOUR_MS);
  });
});

describe('after an attempt (settleAttempt)', () => {
  const now = Date.parse('2026-12-07T12:00:00.000Z');
  const facts = (over: Partial<AttemptFacts>): AttemptFacts => ({ attempt: 1, delivered: false, statusCode: 500, refused: false, retryAfter: null, answeredAt: now, ...over });
  const mid = () => 0.5;

  test('a 2xx is delivered, whatever the attempt number', () => {
    assert.deepEqual(settleAttempt(facts({ delivered: true, statusCode: 200 })), { outcome: 'delivered' });
    assert.deepEqual(settleAttempt(facts({ delivered: true, statusCode: 204, attempt: MAX_DELIVERY_ATTEMPTS + 3 })), { outcome: 'delivered' });
  });

  test('410 Gone fails at once, on the first attempt too, Retry-After or not', () => {
    assert.deepEqual(settleAttempt(facts({ statusCode: 410 })), { outcome: 'failed', reason: 'gone' });
    assert.deepEqual(settleAttempt(facts({ statusCode: 410, retryAfter: '5' })), { outcome: 'failed', reason: 'gone' });
  });

  test('a target the URL guard refuses fails at once', () => {
    assert.deepEqual(settleAttempt(facts({ statusCode: null, refused: true })), { outcome: 'failed', reason: 'refused' });
  });

  test('other failures retry on the schedule until it is used up', () => {
    assert.deepEqual(settleAttempt(facts({ attempt: 2 }), mid), { outcome: 'retry', delayMs: retryDelayMs(2, mid) });
    assert.deepEqual(settleAttempt(facts({ statusCode: null }), mid), { outcome: 'retry', delayMs: 5_000 });
    assert.deepEqual(settleAttempt(facts({ attempt: MAX_DELIVERY_ATTEMPTS })), { outcome: 'failed', reason: 'exhausted' });
    assert.deepEqual(settleAttempt(facts({ attempt: MAX_DELIVERY_ATTEMPTS + 1 })), { outcome: 'failed', reason: 'exhausted' });
  });

  test('a 429 or 503 Retry-After longer than the scheduled delay sets the delay, capped at 1 h', () => {
    for (const statusCode of [429, 503]) {
      assert.deepEqual(settleAttempt(facts({ statusCode, retryAfter: '20' }), mid), { outcome: 'retry', delayMs: 20_000 });
      assert.deepEqual(settleAttempt(facts({ statusCode, retryAfter: 'Mon, 07 Dec 2026 12:00:45 GMT' }), mid), { outcome: 'retry', delayMs: 45_000 });
      assert.deepEqual(settleAttempt(facts({ statusCode, retryAfter: '86400' }), mid), { outcome: 'retry', delayMs: HOUR_MS });
    }
  });

  test('a Retry-After shorter than the scheduled delay does not shorten it (the 72 h stand)', () => {
    assert.deepEqual(settleAttempt(facts({ statusCode: 429, retryAfter: '0' }), mid), { outcome: 'retry', delayMs: 5_000 });
    const late = MAX_DELIVERY_ATTEMPTS - 1;
    assert.deepEqual(settleAttempt(facts({ attempt: late, statusCode: 503, retryAfter: '1' }), mid), { outcome: 'retry', delayMs: retryDelayMs(late, mid) });
  });

  test('Retry-After on other statuses is ignored', () => {
    for (const statusCode of [500, 502, 400, 404]) {
      assert.deepEqual(settleAttempt(facts({ statusCode, retryAfter: '600' }), mid), { outcome: 'retry', delayMs: 5_000 }, `HTTP ${statusCode}`);
    }
  });
});
