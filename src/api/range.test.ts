import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ifNoneMatchHits, parseRange } from './range.ts';

const SIZE = 1000;

describe('Range header parsing', () => {
  test('no header, or one that is not a single byte range, means the whole file', () => {
    for (const header of [
      undefined,
      '',
      'bytes=',
      'bytes=-',
      'items=0-5',
      'bytes=abc',
      'bytes=0-1,5-6',
      'bytes=1.5-2',
      'bytes=--5',
      'bytes=0x10-20',
      'bytes=+1-2',
      'bytes=1-2-3',
    ]) {
      assert.equal(parseRange(header, SIZE), null, String(header));
    }
  });

  test('first-last selects those bytes, inclusive', () => {
    assert.deepEqual(parseRange('bytes=0-99', SIZE), { start: 0, end: 99 });
    assert.deepEqual(parseRange('bytes=0-0', SIZE), { start: 0, end: 0 });
    assert.deepEqual(parseRange('bytes=999-999', SIZE), { start: 999, end: 999 });
    assert.deepEqual(parseRange(' bytes=10-20 ', SIZE), { start: 10, end: 20 });
  });

  test('an open end runs to the last byte; an end past the file is clamped', () => {
    assert.deepEqual(parseRange('bytes=100-', SIZE), { start: 100, end: 999 });
    assert.deepEqual(parseRange('bytes=900-5000', SIZE), { start: 900, end: 999 });
  });

  test('a suffix range takes the last n bytes, or the whole file when n is larger', () => {
    assert.deepEqual(parseRange('bytes=-100', SIZE), { start: 900, end: 999 });
    assert.deepEqual(parseRange('bytes=-1', SIZE), { start: 999, end: 999 });
    assert.deepEqual(parseRange('bytes=-5000', SIZE), { start: 0, end: 999 });
  });

  test('a range with no byte in the file is unsatisfiable', () => {
    assert.equal(parseRange('bytes=1000-', SIZE), 'unsatisfiable');
    assert.equal(parseRange('bytes=1000-2000', SIZE), 'unsatisfiable');
    assert.equal(parseRange('bytes=-0', SIZE), 'unsatisfiable');
    assert.equal(parseRange('bytes=99999999999999999999-', SIZE), 'unsatisfiable');
  });

  test('a backwards range is invalid and ignored (whole file), not unsatisfiable', () => {
    assert.equal(parseRange('bytes=5-4', SIZE), null);
    assert.equal(parseRange('bytes=2000-1000', SIZE), null);
  });

  test('the unit is case-insensitive and white space around the range is allowed', () => {
    assert.deepEqual(parseRange('Bytes=0-9', SIZE), { start: 0, end: 9 });
    assert.deepEqual(parseRange('BYTES= 0-9 ', SIZE), { start: 0, end: 9 });
  });

  test('every range of an empty file is unsatisfiable', () => {
    assert.equal(parseRange('bytes=0-', 0), 'unsatisfiable');
    assert.equal(parseRange('bytes=0-0', 0), 'unsatisfiable');
    assert.equal(parseRange('bytes=-5', 0), 'unsatisfiable');
  });
});

describe('If-None-Match', () => {
  const etag = '"abc"';
  test('matches *, the tag itself, its weak form and any member of a list', () => {
    for (const header of ['*', ' * ', '"abc"', 'W/"abc"', '"x", "abc"', '"x",W/"abc" , "y"']) assert.equal(ifNoneMatchHits(header, etag), true, header);
  });
  test('does not match other tags, an absent header or a bare value', () => {
    for (const header of [undefined, '', '"abd"', 'abc', '"x", "y"', 'W/"ab"']) assert.equal(ifNoneMatchHits(header, etag), false, String(header));
  });
});
