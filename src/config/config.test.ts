import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError, loadConfig, parseApiKeys, publicBaseUrl } from './config.ts';

describe('loadConfig', () => {
  test('an empty environment gives the documented defaults', () => {
    const c = loadConfig({});
    assert.equal(c.http.port, 3000);
    assert.equal(c.http.host, '127.0.0.1');
    assert.equal(c.http.publicBaseUrl, null);
    assert.equal(c.dataDir, path.resolve('./data'));
    assert.equal(c.databaseUrl, null);
    assert.equal(c.apiKeys, null);
    assert.equal(c.webhookSecret, null);
    assert.equal(c.allowPrivateUrls, false);
    assert.equal(c.maxUploadBytes, 52_428_800);
    assert.equal(c.queueTtlMs, 86_400_000);
    assert.equal(c.jobTimeoutMs, 1_800_000);
    assert.equal(c.leaseMs, 60_000);
    assert.equal(c.maxAttempts, 3);
    assert.equal(publicBaseUrl(c), 'http://127.0.0.1:3000');
  });

  test('the result is frozen', () => {
    const c = loadConfig({});
    assert.ok(Object.isFrozen(c));
    assert.throws(() => {
      (c as any).leaseMs = 1;
    }, TypeError);
  });

  test('empty strings count as unset', () => {
    const c = loadConfig({ PORT: '', ZHINIAN_ALLOW_PRIVATE_URLS: '', ZHINIAN_WEBHOOK_SECRET: '', ZHINIAN_API_KEYS: '' });
    assert.equal(c.http.port, 3000);
    assert.equal(c.allowPrivateUrls, false);
    assert.equal(c.webhookSecret, null);
    assert.equal(c.apiKeys, null);
  });

  test('seconds become milliseconds, and the other values are read', () => {
    const c = loadConfig({
      PORT: '8080',
      HOST: '0.0.0.0',
      ZHINIAN_DATA_DIR: '/tmp/zhinian-x',
      ZHINIAN_WEBHOOK_SECRET: 's3cret',
      ZHINIAN_MAX_UPLOAD_BYTES: '1024',
      ZHINIAN_QUEUE_TTL_SECONDS: '10',
      ZHINIAN_JOB_TIMEOUT_SECONDS: '20',
      ZHINIAN_JOB_LEASE_SECONDS: '3',
      ZHINIAN_PUBLIC_BASE_URL: 'https://api.example.com/zhinian/',
    });
    assert.equal(c.http.port, 8080);
    assert.equal(c.http.host, '0.0.0.0');
    assert.equal(c.dataDir, '/tmp/zhinian-x');
    assert.equal(c.webhookSecret, 's3cret');
    assert.equal(c.maxUploadBytes, 1024);
    assert.equal(c.queueTtlMs, 10_000);
    assert.equal(c.jobTimeoutMs, 20_000);
    assert.equal(c.leaseMs, 3_000);
    assert.equal(c.http.publicBaseUrl, 'https://api.example.com/zhinian');
    assert.equal(publicBaseUrl(c, 1234), 'https://api.example.com/zhinian');
  });

  test('booleans are exactly "true" or "false"', () => {
    assert.equal(loadConfig({ ZHINIAN_ALLOW_PRIVATE_URLS: 'true' }).allowPrivateUrls, true);
    assert.equal(loadConfig({ ZHINIAN_ALLOW_PRIVATE_URLS: 'false' }).allowPrivateUrls, false);
    for (const value of ['yes', 'no', '1', '0', 'TRUE', 'on']) {
      assert.throws(
        () => loadConfig({ ZHINIAN_ALLOW_PRIVATE_URLS: value }),
        (e: unknown) => e instanceof ConfigError && /ZHINIAN_ALLOW_PRIVATE_URLS/.test(e.message),
        value,
      );
    }
  });

  test('bad numbers and values are refused', () => {
    const bad: Record<string, string>[] = [
      { PORT: 'abc' },
      { PORT: '70000' },
      { PORT: '-1' },
      { ZHINIAN_JOB_LEASE_SECONDS: '0' },
      { ZHINIAN_JOB_LEASE_SECONDS: '1.5' },
      { ZHINIAN_QUEUE_TTL_SECONDS: 'day' },
      { ZHINIAN_JOB_TIMEOUT_SECONDS: '-5' },
      { ZHINIAN_MAX_UPLOAD_BYTES: '0' },
      { ZHINIAN_PUBLIC_BASE_URL: 'ftp://example.com' },
      { ZHINIAN_PUBLIC_BASE_URL: 'not a url' },
      { LOG_LEVEL: 'loud' },
    ];
    for (const env of bad) {
      const [name] = Object.keys(env);
      assert.throws(
        () => loadConfig(env),
        (e: unknown) => e instanceof ConfigError && e.message.includes(name),
        JSON.stringify(env),
      );
    }
  });

  test('every bad value is reported in one error', () => {
    try {
      loadConfig({ PORT: 'abc', ZHINIAN_ALLOW_PRIVATE_URLS: 'yes', ZHINIAN_JOB_LEASE_SECONDS: '0', ZHINIAN_QUEUE_TTL_SECONDS: 'x' });
      assert.fail('accepted bad configuration');
    } catch (e) {
      assert.ok(e instanceof ConfigError);
      for (const name of ['PORT', 'ZHINIAN_ALLOW_PRIVATE_URLS', 'ZHINIAN_JOB_LEASE_SECONDS', 'ZHINIAN_QUEUE_TTL_SECONDS']) {
        assert.ok(e.message.includes(name), `${name} missing from: ${e.message}`);
      }
    }
  });

  test('a malformed ZHINIAN_API_KEYS is reported together with the other bad values', () => {
    try {
      loadConfig({ PORT: 'abc', ZHINIAN_API_KEYS: 'no-colon-here' });
      assert.fail('accepted bad configuration');
    } catch (e) {
      assert.ok(e instanceof ConfigError);
      assert.ok(e.message.includes('PORT'), e.message);
      assert.ok(e.message.includes('ZHINIAN_API_KEYS'), e.message);
    }
  });

  test('ZHINIAN_API_KEYS is parsed into clients and keys', () => {
    assert.deepEqual(loadConfig({ ZHINIAN_API_KEYS: 'a:k1,b:k2' }).apiKeys, [
      { clientId: 'a', key: 'k1' },
      { clientId: 'b', key: 'k2' },
    ]);
  });
});

describe('parseApiKeys', () => {
  test('pairs are split on commas and the first colon, with spaces trimmed', () => {
    assert.deepEqual(parseApiKeys(' a : k1 , b:k2:with:colons ,'), [
      { clientId: 'a', key: 'k1' },
      { clientId: 'b', key: 'k2:with:colons' },
    ]);
  });

  test('a client may have several keys', () => {
    assert.deepEqual(parseApiKeys('a:k1,a:k2'), [
      { clientId: 'a', key: 'k1' },
      { clientId: 'a', key: 'k2' },
    ]);
  });

  test('malformed entries, duplicate keys and empty lists are refused', () => {
    for (const value of ['', ',', ' , ', 'nocolon', ':key', 'client:', 'a:k1,b:k1', 'a:k1,broken']) {
      assert.throws(() => parseApiKeys(value), ConfigError, JSON.stringify(value));
    }
  });

  test('the error never echoes a whole key list back', () => {
    try {
      parseApiKeys('a:secret-one,a:secret-one');
      assert.fail('accepted a duplicate key');
    } catch (e) {
      assert.ok(e instanceof ConfigError);
      assert.ok(!e.message.includes('secret-one'), e.message);
    }
  });
});
