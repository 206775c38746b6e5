// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { boot, type Running } from '../src/cli/boot.ts';
import { callApi, KEY_A, tempDir, testEnv, waitFor } from './helpers.ts';
import { httpRequest, rawRequest } from './raw-http.ts';

/** What the service logs at the default level: one line per request, no health checks, no alarms for clients that hang up. */
describe('request logs', () => {
  let running: Running;
  let url: string;
  const lines: Record<string, any>[] = [];
  const api = (p: string, init: Parameters<typeof callApi>[2] = {}) => callApi(url, p, init);
  const linesFor = (reqId: string) => lines.filter((l) => l.reqId === reqId);

  before(async () => {
    const sink = new Writable({
      write(chunk, _enc, done) {
        for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
        done();
      },
    });
    const dataDir = tempDir();
    running = await boot({ env: { ...testEnv(dataDir), LOG_LEVEL: 'info' }, server: true, worker: false, logger: pino({ level: 'info' }, sink) });
    url = running.url!;
  });
  after(() => running.stop());

  test('one line per request, naming the route pattern, client, status and duration; none for health checks', async () => {
    const res = await api('/api/v1/jobs?limit=5', { headers: { 'x-request-id': 'trace-0001' } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-request-id'), 'trace-0001');
    await waitFor(() => linesFor('trace-0001').length > 0, { what: 'the request line' });
    const mine = linesFor('trace-0001');
    assert.equal(mine.length, 1, JSON.stringify(mine));
    assert.equal(mine[0]!.route, '/api/v1/jobs');
    assert.equal(mine[0]!.statusCode, 200);
    assert.equal(mine[0]!.clientId, 'client-a');
    assert.equal(typeof mine[0]!.durationMs, 'number');
    assert.ok(!JSON.stringify(lines).includes(KEY_A), 'keys are never logged');

    const before = lines.length;
    for (const p of ['/healthz', '/readyz']) assert.equal((await api(p, { key: '' })).status, 200);
    await api('/api/v1/capabilities', { headers: { 'x-request-id': 'trace-0002' } });
    await waitFor(() => linesFor('trace-0002').length > 0);
    assert.equal(lines.length, before + 1, `only the capabilities request was logged: ${JSON.stringify(lines.slice(before))}`);
  });

  test('X-Request-Id is kept only when short and printable; otherwise a generated id is used', async () => {
    for (const given of ['a'.repeat(65), 'has space', 'tab\there', 'ünïcode']) {
      const res = await rawRequest(Number(new URL(url).port), httpRequest('GET', '/api/v1/capabilities', { authorization: `Bearer ${KEY_A}`, 'x-request-id': given }));
      assert.equal(res.status, 200);
      assert.notEqual(res.headers['x-request-id'], given);
      assert.match(res.headers['x-request-id']!, /^[0-9a-f-]{36}$/);
    }
  });

  test('a client hanging up mid-upload is not logged as an error', async () => {
    const before = lines.length;
    const body = Buffer.alloc(2 * 1024 * 1024, 1);
    const head = httpRequest('POST', '/api/v1/assets', {
      authorization: `Bearer ${KEY_A}`,
      'content-type': 'multipart/form-data; boundary=b',
      'content-length': String(body.length + 200),
      'x-request-id': 'hangs-up',
    });
    const part = `--b\r\nContent-Disposition: form-data; name="files"; filename="x.bin"\r\n\r\n`;
    await rawRequest(Number(new URL(url).port), Buffer.concat([Buffer.from(head + part), body.subarray(0, 512 * 1024)]), {
      timeoutMs: 3_000,
      then: (socket) => setTimeout(() => socket.destroy(), 100),
    }).catch(() => null);
    await waitFor(() => linesFor('hangs-up').length > 0, { what: 'the aborted request to be logged' });
    await new Promise((r) => setTimeout(r, 200));
    const logged = lines.slice(before);
    assert.deepEqual(
      logged.filter((l) => l.level >= 50),
      [],
      'no error-level line',
    );
    assert.deepEqual(
      linesFor('hangs-up').map((l) => [l.level, l.msg]),
      [[30, 'request aborted by the client']],
    );
  });

  test('error messages do not repeat their prefix', async () => {
    const res = await api('/api/v1/assets', { method: 'POST', json: { url: 'ftp://example.invalid/a.png' } });
    assert.equal(res.status, 400);
    assert.equal(res.body.error, 'url: scheme ftp: is not allowed, only http: and https:');
    const job = await api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.upscale', imageUrls: ['file:///etc/passwd'] } });
    assert.equal(job.body.error, 'imageUrls[0]: scheme file: is not allowed, only http: and https:');
  });
});
