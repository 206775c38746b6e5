import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatCursor, parseCursor } from './cursor.ts';
import { Invalid } from './errors.ts';

const T = Date.UTC(2026, 10, 24, 8, 0, 0, 123); // 2026-11-24T08:00:00.123Z

describe('paging cursors', () => {
  test('a whole-millisecond key formats as plain ISO 8601 with milliseconds', () => {
    assert.equal(formatCursor(T * 1000), '2026-11-24T08:00:00.123Z');
    assert.equal(formatCursor(Date.UTC(2026, 0, 1) * 1000), '2026-01-01T00:00:00.000Z');
  });

  test('a key inside a millisecond carries six fractional digits', () => {
    assert.equal(formatCursor(T * 1000 + 4), '2026-11-24T08:00:00.123004Z');
    assert.equal(formatCursor(T * 1000 + 999), '2026-11-24T08:00:00.123999Z');
    assert.equal(formatCursor(T * 1000 + 10), '2026-11-24T08:00:00.123010Z');
  });

  test('format then parse gives the same microsecond key back', () => {
    for (const us of [T * 1000, T * 1000 + 1, T * 1000 + 500, T * 1000 + 999, 0, Date.UTC(1999, 11, 31, 23, 59, 59, 999) * 1000 + 7]) {
      assert.equal(parseCursor(formatCursor(us)), us, formatCursor(us));
    }
  });

  test('parse accepts 1 to 9 fractional digits, keeping microseconds', () => {
    const s = Date.UTC(2026, 10, 24, 8) * 1000;
    assert.equal(parseCursor('2026-11-24T08:00:00Z'), s);
    assert.equal(parseCursor('2026-11-24T08:00:00.5Z'), s + 500_000);
    assert.equal(parseCursor('2026-11-24T08:00:00.123Z'), s + 123_000);
    assert.equal(parseCursor('2026-11-24T08:00:00.123456Z'), s + 123_456);
    assert.equal(parseCursor('2026-11-24T08:00:00.123456789Z'), s + 123_456);
  });

  test('time zones are honoured, with and without the colon', () => {
    const utc = parseCursor('2026-11-24T08:00:00.123004Z');
    assert.equal(parseCursor('2026-11-24T16:00:00.123004+08:00'), utc);
    assert.equal(parseCursor('2026-11-24T16:00:00.123004+0800'), utc);
    assert.equal(parseCursor('2026-11-24T03:00:00.123004-05:00'), utc);
    assert.equal(parseCursor('2026-11-24T08:00:00.123004+00:00'), utc);
  });

  test('a date alone and a time without seconds mean UTC', () => {
    assert.equal(parseCursor('2026-11-24'), Date.UTC(2026, 10, 24) * 1000);
    assert.equal(parseCursor('2026-11-24T08:30Z'), Date.UTC(2026, 10, 24, 8, 30) * 1000);
  });

  test('anything that is not an ISO 8601 time is rejected, naming the field', () => {
    const bad = [
      '',
      'yesterday',
      '1700000000000',
      '2026-11-24 08:00:00Z',
      '2026-11-24T08:00:00.Z',
      '2026-11-24T08:00:00.123',
      '24/11/2026',
      '2026-13-01T00:00:00Z',
      '2026-11-24T25:00:00Z',
      '2026-11-24T08:61:00Z',
      '2026-11-24T08:00:00Z ',
      'job_01hzy',
    ];
    for (const value of bad) {
      assert.throws(
        () => parseCursor(value),
        (e: unknown) => e instanceof Invalid && e.field === 'before' && /before/.test(e.message),
        `accepted ${JSON.stringify(value)}`,
      );
    }
    assert.throws(
      () => parseCursor('nope', 'cursor'),
      (e: unknown) => e instanceof Invalid && e.field === 'cursor',
    );
  });

  test('calendar dates that do not exist are rejected, not rolled over', () => {
    for (const value of ['2026-02-30T00:00:00Z', '2026-04-31', '2025-02-29T12:00:00.000Z']) {
      assert.throws(() => parseCursor(value), Invalid, `accepted ${value}`);
    }
  });
});
