import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { canonicalJson, sha256Hex } from './canonical-json.ts';

describe('canonical JSON', () => {
  test('key order does not matter, at any depth', () => {
    const a = { capability: 'image.generate', prompt: 'p', settings: { ratio: '16:9', duration: 5, nested: { z: 1, a: [{ y: 2, b: 3 }] } } };
    const b = { settings: { nested: { a: [{ b: 3, y: 2 }], z: 1 }, duration: 5, ratio: '16:9' }, prompt: 'p', capability: 'image.generate' };
    assert.equal(canonicalJson(a), canonicalJson(b));
    assert.equal(canonicalJson(a), '{"capability":"image.generate","prompt":"p","settings":{"duration":5,"nested":{"a":[{"b":3,"y":2}],"z":1},"ratio":"16:9"}}');
  });

  test('whitespace in the request text does not matter', () => {
    const compact = JSON.parse('{"b":[1,2,{"d":null,"c":true}],"a":"x y"}');
    const spaced = JSON.parse('{\n  "a" : "x y",\n\t"b" : [ 1 , 2 , { "c" : true , "d" : null } ]\n}');
    assert.equal(canonicalJson(compact), canonicalJson(spaced));
    assert.equal(sha256Hex(canonicalJson(compact)), sha256Hex(canonicalJson(spaced)));
  });

  test('array order and values still matter', () => {
    assert.notEqual(canonicalJson({ a: [1, 2] }), canonicalJson({ a: [2, 1] }));
    assert.notEqual(canonicalJson({ a: 1 }), canonicalJson({ a: '1' }));
    assert.notEqual(canonicalJson({ a: null }), canonicalJson({}));
    assert.notEqual(canonicalJson({ a: { b: 1 } }), canonicalJson({ a: { b: 1, c: 2 } }));
  });

  test('output is valid JSON equal to the input', () => {
    const value = { ü: '中文 "quoted" \\ \n', e: 1e21, n: -0.5, t: false, list: [], obj: {} };
    assert.deepEqual(JSON.parse(canonicalJson(value)), value);
  });

  test('scalars and undefined members serialise like JSON.stringify', () => {
    assert.equal(canonicalJson(null), 'null');
    assert.equal(canonicalJson('s'), '"s"');
    assert.equal(canonicalJson(3), '3');
    assert.equal(canonicalJson({ a: undefined, b: 1 }), '{"b":1}');
  });

  test('sha256Hex is the hex SHA-256 of the text', () => {
    assert.equal(sha256Hex('abc'), createHash('sha256').update('abc').digest('hex'));
    assert.match(sha256Hex(''), /^[0-9a-f]{64}$/);
  });
});
