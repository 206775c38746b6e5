import assert from 'node:assert/strict';
import { test } from 'node:test';
import { retryAfterSeconds, slidingCount, WINDOW_MS } from './rate-limit.ts';

test('the sliding count weighs the previous minute by how much of it still overlaps', () => {
  assert.equal(slidingCount(60, 0, 0), 60);
  assert.equal(slidingCount(60, 10, WINDOW_MS / 2), 40);
  assert.equal(slidingCount(60, 10, WINDOW_MS * 0.9), 16);
});

test('Retry-After is the first second at which one more request fits', () => {
  const limit = 30;
  // This window alone is full, 10 s in: the next window must first let 1/30 of it fade.
  assert.equal(retryAfterSeconds(0, 30, 10_000, limit), 52);
  // The previous window's weight holds the count up: 60 * (1 - (10 + t) / 60) + 5 + 1 <= 30.
  assert.equal(retryAfterSeconds(60, 5, 10_000, limit), 26);
  // Never less than a second.
  assert.equal(retryAfterSeconds(31, 0, 59_999, limit), 1);
  for (const [previous, current, elapsed] of [
    [0, 30, 10_000],
    [60, 5, 10_000],
    [45, 29, 1_000],
    [100, 40, 30_000],
  ]) {
    const wait = retryAfterSeconds(previous, current, elapsed, limit) * 1000;
    const at = elapsed + wait;
    const [p, c, e] = at < WINDOW_MS ? [previous, current, at] : [current, 0, at - WINDOW_MS];
    assert.ok(slidingCount(p, c, e) + 1 <= limit + 1e-9, `fits after ${wait} ms (${previous}, ${current}, ${elapsed})`);
    const e1 = at - 1000;
    const [p1, c1, ee] = e1 < WINDOW_MS ? [previous, current, e1] : [current, 0, e1 - WINDOW_MS];
    assert.ok(slidingCount(p1, c1, ee) + 1 > limit, `does not fit a second earlier (${previous}, ${current}, ${elapsed})`);
  }
});
