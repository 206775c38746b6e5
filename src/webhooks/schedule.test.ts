import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { WEBHOOK_SCHEDULE_SECONDS as RETRY_DELAYS_SECONDS } from '../lib/retry-ladders.ts';
import { MAX_DELIVERY_ATTEMPTS, retryDelayMs } from './schedule.ts';

const DAY_MS = 24 * 3600 * 1000;

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

  test('retries span at least 24 h even when every delay is jittered to its shortest', () => {
    let total = 0;
    for (let attempt = 1; attempt < MAX_DELIVERY_ATTEMPTS; attempt++) total += retryDelayMs(attempt, () => 0)!;
    assert.ok(total >= DAY_MS, `${total / 3_600_000} h`);
  });

  test('there is no delay after the last attempt', () => {
    assert.equal(MAX_DELIVERY_ATTEMPTS, RETRY_DELAYS_SECONDS.length + 1);
    assert.notEqual(retryDelayMs(MAX_DELIVERY_ATTEMPTS - 1), null);
    assert.equal(retryDelayMs(MAX_DELIVERY_ATTEMPTS), null);
    assert.equal(retryDelayMs(MAX_DELIVERY_ATTEMPTS + 5), null);
  });
});
