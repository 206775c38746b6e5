// @backends sqlite,postgres
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { KEY_A, startStack, waitFor, type Stack } from './helpers.ts';
import { httpRequest, rawRequest } from './raw-http.ts';

/** Multipart uploads that are cut short, malformed or abandoned end at once and leave nothing behind. */
describe('uploads never hang or leak', () => {
  let stack: Stack;
  let port: number;
  const boundary = 'zhinianBoundary';
  const filePart = (name: string, content: string | Buffer, field = 'files') =>
    Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${field}"; filename="${name}"\r\nContent-Type: application/octet-stream\r\n\r\n`),
      Buffer.from(content),
      Buffer.from('\r\n'),
    ]);
  const closing = Buffer.from(`--${boundary}--\r\n`);
  const upload = (body: Buffer, contentType = `multipart/form-data; boundary=${boundary}`) =>
    Buffer.concat([
      Buffer.from(httpRequest('POST', '/api/v1/assets', { authorization: `Bearer ${KEY_A}`, 'content-type': contentType, 'content-length': String(body.length) })),
      body,
    ]);
  const tmpDir = () => path.join(stack.dataDir, 'tmp');
  const tempFiles = () => (fs.existsSync(tmpDir()) ? fs.readdirSync(tmpDir()).filter((f) => f !== 'work') : []);
  /** This process's sockets and files outside the database (whose checkpointer opens the WAL on its own schedule). */
  const openFds = () =>
    fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
        return target.startsWith('socket:') || (target.startsWith('/') && !/\.db(-wal|-shm)?$/.test(target) && target !== '/dev/null');
      } catch {
        return false;
      }
    }).length;
  const assetCount = async () => (await stack.api('/api/v1/assets?limit=200')).body.assets.length as number;

  before(async () => {
    stack = await startStack({ worker: false });
    port = Number(new URL(stack.url).port);
  });
  after(() => stack.stop());

  test('a body that ends before its closing boundary is a 400 as soon as the declared length has arrived', async () => {
    for (const body of [
      filePart('a.txt', 'complete part, no closing boundary'),
      Buffer.concat([filePart('a.txt', 'one'), Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="files"; filename="b.txt"\r\n\r\ncut in the mid`)]),
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n`),
      Buffer.from('not multipart at all'),
    ]) {
      const res = await rawRequest(port, upload(body), { timeoutMs: 5_000 });
      assert.equal(res.status, 400, res.text);
      assert.equal(res.json.code, 'invalid_request');
      assert.match(res.json.error, /^files: /);
      assert.ok(res.ms < 3_000, `answered after ${res.ms} ms`);
    }
    assert.deepEqual(tempFiles(), []);
    assert.equal(await assetCount(), 0);
  });

  test('a large part without a form-data disposition (which the parser skips) does not hang the upload', async () => {
    for (const size of [16_000, 17_000, 40_000, 70_000]) {
      const body = Buffer.from(`--${boundary}\r\nContent-Type: image/png\r\n\r\n${'a'.repeat(size)}\r\n--${boundary}--\r\n`);
      const res = await rawRequest(port, upload(body), { timeoutMs: 8_000 });
      assert.equal(res.status, 400, `${size}: ${res.text}`);
      assert.match(res.json.error, /^files: /);
    }
    // A file name with a bare line break is skipped too; after a file, and with the body not all read yet.
    const file = filePart('a.txt', 'x'.repeat(85_000));
    const skipped = Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="files"; filename="\n\u202e"\r\nContent-Type: image/png\r\n\r\n${'\u0000'.repeat(62_797)}\r\n`,
    );
    for (const body of [Buffer.concat([file, skipped, closing]), Buffer.concat([skipped, closing])]) {
      const res = await rawRequest(port, upload(body), { timeoutMs: 8_000 });
      assert.equal(res.status, 400, res.text);
      assert.equal(res.json.error, 'files: the multipart body is malformed');
    }
    assert.deepEqual(tempFiles(), []);
  });

  test('multipart/form-data without a boundary is a 400 naming Content-Type', async () => {
    const res = await rawRequest(port, upload(Buffer.concat([filePart('a.txt', 'x'), closing]), 'multipart/form-data'));
    assert.equal(res.status, 400, res.text);
    assert.match(res.json.error, /Content-Type.*boundary/);
  });

  test('more than 20 files is a 400 that says so; 20 are fine', async () => {
    const files = (n: number) => Buffer.concat([...Array.from({ length: n }, (_, i) => filePart(`f${i}.txt`, `file ${i}`)), closing]);
    const tooMany = await rawRequest(port, upload(files(21)));
    assert.equal(tooMany.status, 400, tooMany.text);
    assert.equal(tooMany.json.error, 'files: at most 20 files per request');
    assert.deepEqual(tempFiles(), []);
    const twenty = await rawRequest(port, upload(files(20)));
    assert.equal(twenty.status, 201, twenty.text);
    assert.equal(twenty.json.assets.length, 20);
  });

  test('a zero-byte file is refused, and nothing of its request is kept', async () => {
    const before = await assetCount();
    const res = await rawRequest(port, upload(Buffer.concat([filePart('ok.txt', 'fine'), filePart('empty.txt', ''), closing])));
    assert.equal(res.status, 400, res.text);
    assert.equal(res.json.error, 'files[1]: is empty (0 bytes)');
    assert.equal(await assetCount(), before);
    assert.deepEqual(tempFiles(), []);
  });

  test('a file part in another field is refused by name', async () => {
    const res = await rawRequest(port, upload(Buffer.concat([filePart('a.txt', 'x', 'file'), closing])));
    assert.equal(res.status, 400);
    assert.match(res.json.error, /^file: unexpected file field/);
  });

  test('20 clients hanging up mid-upload leave no open file descriptor, no temp file and no row', async () => {
    const rowsBefore = await assetCount();
    // Settle what earlier requests opened (keep-alive sockets, pooled connections) first.
    await new Promise((r) => setTimeout(r, 200));
    const fdsBefore = openFds();
    const big = Buffer.alloc(4 * 1024 * 1024, 7);
    const body = Buffer.concat([filePart('big.bin', big), closing]);
    await Promise.all(
      Array.from({ length: 20 }, () =>
        rawRequest(port, upload(body).subarray(0, 1024 * 1024 + 300), {
          timeoutMs: 5_000,
          // Wait until the server is writing the file, then vanish.
          then: (socket) => setTimeout(() => socket.destroy(), 100),
        }).catch(() => null),
      ),
    );
    await waitFor(() => tempFiles().length === 0, { timeoutMs: 10_000, what: `temp files to go (${tempFiles().join(', ')})` });
    await waitFor(() => openFds() <= fdsBefore, { timeoutMs: 10_000, what: `fds back to ${fdsBefore} (now ${openFds()})` });
    assert.equal(await assetCount(), rowsBefore);
  });
});
