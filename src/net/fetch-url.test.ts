import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { FetchError, checkUrl, downloadToFile, guardedDispatcher, guardedLookup, isPublicAddress, nextHop, openUrl, type FetchOptions } from './fetch-url.ts';

const BODY = Buffer.from('hello, world\n'.repeat(100));
let server: http.Server;
let base = '';
let dir = '';
let requests = 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fetch-url-'));
  server = http.createServer((req, res) => {
    requests++;
    const path = req.url ?? '/';
    const redirect = /^\/r\/(\d+)$/.exec(path);
    if (redirect) {
      const n = Number(redirect[1]);
      res.writeHead(302, { location: n > 1 ? `/r/${n - 1}` : '/ok' }).end();
    } else if (path === '/ok') {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': BODY.length }).end(BODY);
    } else if (path === '/big') {
      res.writeHead(200, { 'content-length': 10_000 }).end(Buffer.alloc(10_000, 1));
    } else if (path === '/big-chunked') {
      res.writeHead(200);
      // Several writes so the cap trips mid-stream, after part of the body reached the file.
      for (let i = 0; i < 10; i++) res.write(Buffer.alloc(1000, 2));
      res.end();
    } else if (path === '/to-file') {
      res.writeHead(301, { location: 'file:///etc/passwd' }).end();
    } else if (path === '/to-creds') {
      res.writeHead(307, { location: `${base}/ok`.replace('http://', 'http://u:p@') }).end();
    } else if (path === '/slow-headers') {
      // Never answers; the connection is torn down in after().
    } else if (path === '/slow-body') {
      res.writeHead(200);
      res.write('partial');
    } else {
      res.writeHead(404).end('nope');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

const open: FetchOptions = { allowPrivate: true, maxBytes: 1_000_000 };

async function rejectsWith(p: Promise<unknown>, code: string, status?: number): Promise<FetchError> {
  const err = await p.then(
    () => assert.fail(`expected FetchError ${code}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof FetchError, `expected FetchError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  if (status !== undefined) assert.equal(err.status, status);
  assert.ok(!err.message.includes('\n    at '), 'message carries no stack');
  return err;
}

function throwsWith(fn: () => unknown, code: string): FetchError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof FetchError, `expected FetchError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  return assert.fail(`expected FetchError ${code}`);
}

async function drain(body: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('isPublicAddress', () => {
  const refused = [
    '127.0.0.1',
    '10.1.2.3',
    '172.16.0.1',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '100.100.100.200',
    '0.0.0.0',
    '224.0.0.1',
    '255.255.255.255',
    '192.0.2.1',
    '198.18.0.1',
    '240.0.0.1',
    '::1',
    '::',
    'fe80::1',
    'fc00::1',
    'fd00:ec2::254',
    'ff02::1',
    '2001:db8::1',
    '::ffff:127.0.0.1',
    '::ffff:7f00:1',
    '::ffff:10.0.0.1',
    '::127.0.0.1',
    '64:ff9b::a00:1',
    '64:ff9b:1::808:808',
    '2002:7f00:1::1',
    '2001:0:4136:e378:8000:63bf:f5ff:fffe', // 6to4 of 127.0.0.1, teredo with client 10.0.0.1
    'not-an-ip',
    '',
  ];
  const allowed = ['8.8.8.8', '1.1.1.1', '2606:4700:4700::1111', '::ffff:8.8.8.8', '64:ff9b::808:808', '2002:808:808::1'];
  for (const a of refused) test(`refuses ${a || '(empty)'}`, () => assert.equal(isPublicAddress(a), false));
  for (const a of allowed) test(`accepts ${a}`, () => assert.equal(isPublicAddress(a), true));
});

describe('checkUrl', () => {
  const invalid = [
    'ftp://example.com/x',
    'file:///etc/passwd',
    'javascript:alert(1)',
    'http://',
    '/relative',
    'not a url',
    'http://user:pass@example.com/',
    `http://example.com/${'a'.repeat(2048)}`,
  ];
  for (const u of invalid) {
    test(`invalid: ${u.slice(0, 40)}`, () => {
      throwsWith(() => checkUrl(u, { allowPrivate: false }), 'url_invalid');
      throwsWith(() => checkUrl(u, { allowPrivate: true }), 'url_invalid');
    });
  }
  const forbidden = [
    'http://127.0.0.1/',
    'http://2130706433/',
    'http://0x7f.0.0.1/',
    'http://017700000001/',
    'http://0x7f.1/',
    'http://[::ffff:127.0.0.1]/',
    'http://[::1]/',
    'http://localhost/',
    'http://LOCALHOST./',
    'http://api.localhost:8080/',
    'http://169.254.169.254/latest/meta-data',
    'https://10.0.0.1/',
    'http://[fd00:ec2::254]/',
  ];
  for (const u of forbidden) {
    test(`forbidden unless allowPrivate: ${u}`, () => {
      const err = throwsWith(() => checkUrl(u, { allowPrivate: false }), 'url_forbidden');
      assert.match(err.message, /^(address|host) .* is not public$/);
      assert.ok(checkUrl(u, { allowPrivate: true }) instanceof URL);
    });
  }
  test('names the address and says why', () => {
    const err = throwsWith(() => checkUrl('http://2130706433/', { allowPrivate: false }), 'url_forbidden');
    assert.equal(err.message, 'address 127.0.0.1 is not public');
  });
  test('accepts public URLs and returns the parsed URL', () => {
    assert.equal(checkUrl('https://example.com/a?b=1', { allowPrivate: false }).href, 'https://example.com/a?b=1');
    assert.equal(checkUrl('http://8.8.8.8:8080/', { allowPrivate: false }).hostname, '8.8.8.8');
  });
});

describe('connect-time guard', () => {
  test('guardedLookup drops non-public answers in both callback forms', async () => {
    const lookup = guardedLookup({ allowPrivate: false });
    for (const all of [true, false]) {
      const err = await new Promise<unknown>((resolve) => lookup('localhost', { all }, (e) => resolve(e)));
      assert.ok(err instanceof FetchError && err.code === 'url_forbidden', String(err));
      assert.match(err.message, /^address (127\.0\.0\.1|::1) of localhost is not public$/);
    }
  });
  test('guardedLookup with allowPrivate answers in the requested form', async () => {
    const lookup = guardedLookup({ allowPrivate: true });
    const many = await new Promise<unknown>((resolve, reject) => lookup('localhost', { all: true, family: 4 }, (e, a) => (e ? reject(e) : resolve(a))));
    assert.deepEqual(many, [{ address: '127.0.0.1', family: 4 }]);
    const one = await new Promise<unknown[]>((resolve, reject) => lookup('localhost', { family: 4 }, (e, a, f) => (e ? reject(e) : resolve([a, f]))));
    assert.deepEqual(one, ['127.0.0.1', 4]);
  });
  test('dispatcher refuses a hostname resolving to loopback, before any request is sent', async () => {
    const before = requests;
    const port = new URL(base).port;
    const err = await request(`http://localhost:${port}/ok`, { dispatcher: guardedDispatcher({ allowPrivate: false }) }).then(
      () => assert.fail('connected'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof FetchError && err.code === 'url_forbidden', String(err));
    assert.equal(requests, before);
  });
  test('dispatcher refuses IP literals that skipped checkUrl', async () => {
    const err = await request(`${base}/ok`, { dispatcher: guardedDispatcher({ allowPrivate: false }) }).then(
      () => assert.fail('connected'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof FetchError && err.code === 'url_forbidden', String(err));
  });
  test('dispatchers are cached per allowPrivate', () => {
    assert.equal(guardedDispatcher({ allowPrivate: true }), guardedDispatcher({ allowPrivate: true }));
    assert.notEqual(guardedDispatcher({ allowPrivate: true }), guardedDispatcher({ allowPrivate: false }));
  });
  test('openUrl with allowPrivate:false refuses the loopback server', async () => {
    await rejectsWith(openUrl(`${base}/ok`, { ...open, allowPrivate: false }), 'url_forbidden');
  });
});

describe('openUrl / downloadToFile', () => {
  test('200 streams the body', async () => {
    const res = await openUrl(`${base}/ok`, open);
    assert.equal(res.status, 200);
    assert.equal(res.contentType, 'text/plain');
    assert.equal(res.contentLength, BODY.length);
    assert.equal(res.finalUrl, `${base}/ok`);
    assert.deepEqual(await drain(res.body), BODY);
  });
  test('downloadToFile writes the file and its sha256', async () => {
    const path = join(dir, 'ok.bin');
    const out = await downloadToFile(`${base}/ok`, path, open);
    assert.equal(out.bytes, BODY.length);
    assert.equal(out.sha256, createHash('sha256').update(BODY).digest('hex'));
    assert.equal(out.contentType, 'text/plain');
    assert.deepEqual(readFileSync(path), BODY);
  });
  test('body of exactly maxBytes passes', async () => {
    const out = await downloadToFile(`${base}/ok`, join(dir, 'exact.bin'), { ...open, maxBytes: BODY.length });
    assert.equal(out.bytes, BODY.length);
  });
  test('404 → http_status with the status', async () => {
    const err = await rejectsWith(openUrl(`${base}/missing`, open), 'http_status', 404);
    assert.equal(err.message, `${new URL(base).host} answered HTTP 404`);
  });
  test('follows a chain of 3 redirects', async () => {
    const res = await openUrl(`${base}/r/3`, open);
    assert.equal(res.finalUrl, `${base}/ok`);
    assert.deepEqual(await drain(res.body), BODY);
  });
  test('5 redirects are fine, 6 → too_many_redirects', async () => {
    await drain((await openUrl(`${base}/r/5`, open)).body);
    await rejectsWith(openUrl(`${base}/r/6`, open), 'too_many_redirects');
    await rejectsWith(openUrl(`${base}/r/2`, { ...open, maxRedirects: 1 }), 'too_many_redirects');
  });
  test('each redirect hop is re-checked (scheme, credentials)', async () => {
    await rejectsWith(openUrl(`${base}/to-file`, open), 'url_invalid');
    await rejectsWith(openUrl(`${base}/to-creds`, open), 'url_invalid');
  });
  test('redirect to a private address is refused by the hop check, synchronously, before any connect', () => {
    const from = new URL('https://example.com/a');
    for (const loc of ['http://10.0.0.1/', 'http://169.254.169.254/latest/meta-data', '//127.0.0.1/x', 'http://localhost/']) {
      const err = throwsWith(() => nextHop(from, loc, { allowPrivate: false }), 'url_forbidden');
      assert.match(err.message, /^redirect from example\.com refused: .* is not public$/);
    }
    assert.equal(nextHop(from, '/b?c', { allowPrivate: false }).href, 'https://example.com/b?c');
    throwsWith(() => nextHop(from, undefined, { allowPrivate: false }), 'fetch_failed');
  });
  test('Content-Length over maxBytes → too_large before reading; no file left', async () => {
    await rejectsWith(openUrl(`${base}/big`, { ...open, maxBytes: 1000 }), 'too_large');
    const path = join(dir, 'big.bin');
    await rejectsWith(downloadToFile(`${base}/big`, path, { ...open, maxBytes: 1000 }), 'too_large');
    assert.equal(existsSync(path), false);
  });
  test('chunked body over maxBytes → too_large mid-stream; partial file removed', async () => {
    const res = await openUrl(`${base}/big-chunked`, { ...open, maxBytes: 2500 });
    assert.equal(res.contentLength, null);
    await rejectsWith(drain(res.body), 'too_large');
    const path = join(dir, 'chunked.bin');
    await rejectsWith(downloadToFile(`${base}/big-chunked`, path, { ...open, maxBytes: 2500 }), 'too_large');
    assert.equal(existsSync(path), false);
  });
  test('a body refused before the caller reads it does not crash; reading later reports too_large', async () => {
    const res = await openUrl(`${base}/big-chunked`, { ...open, maxBytes: 2500 });
    await new Promise((resolve) => setTimeout(resolve, 50));
    await rejectsWith(drain(res.body), 'too_large');
  });
  test('connection refused → fetch_failed naming the host', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const err = await rejectsWith(openUrl(`http://127.0.0.1:${port}/`, open), 'fetch_failed');
    assert.equal(err.message, `could not fetch from 127.0.0.1:${port} (ECONNREFUSED)`);
  });
  test('slow headers → timeout', async () => {
    const err = await rejectsWith(openUrl(`${base}/slow-headers`, { ...open, timeoutMs: 300 }), 'timeout');
    assert.match(err.message, /did not finish within 300 ms/);
  });
  test('slow body → timeout while streaming; partial file removed', async () => {
    const res = await openUrl(`${base}/slow-body`, { ...open, timeoutMs: 300 });
    await rejectsWith(drain(res.body), 'timeout');
    const path = join(dir, 'slow.bin');
    await rejectsWith(downloadToFile(`${base}/slow-body`, path, { ...open, timeoutMs: 300 }), 'timeout');
    assert.equal(existsSync(path), false);
  });
  test("caller's abort reason is rethrown as is", async () => {
    const ac = new AbortController();
    const reason = new Error('shutting down');
    setTimeout(() => ac.abort(reason), 50);
    await assert.rejects(openUrl(`${base}/slow-headers`, { ...open, signal: ac.signal }), (e) => e === reason);

    const ac2 = new AbortController();
    const res = await openUrl(`${base}/slow-body`, { ...open, signal: ac2.signal });
    setTimeout(() => ac2.abort(), 50);
    await assert.rejects(drain(res.body), (e: Error) => e.name === 'AbortError');

    await assert.rejects(openUrl(`${base}/ok`, { ...open, signal: AbortSignal.abort(reason) }), (e) => e === reason);
  });
});
