// @backends sqlite,postgres
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { KEY_A, startStack, type Stack } from './helpers.ts';
import { httpRequest, rawRequest, type RawResponse } from './raw-http.ts';

/** `{ error, code }`, a 4xx, and no trace of the request's URL or of internals. */
function assertClean(res: { status: number; text: string; json?: any }, status: number, echo?: string) {
  assert.equal(res.status, status, res.text.slice(0, 300));
  const body = res.json ?? JSON.parse(res.text);
  assert.equal(typeof body.error, 'string');
  assert.match(body.code, /^[a-z][a-z0-9_]*$/);
  assert.doesNotMatch(res.text, /\.(ts|js|mjs):\d+|\n\s+at /);
  if (echo) assert.ok(!res.text.includes(echo), `the answer echoes ${echo}: ${res.text}`);
}

describe('no input makes a 500', () => {
  let stack: Stack;
  let port: number;
  const auth = { authorization: `Bearer ${KEY_A}` };
  const post = (body: string, headers: Record<string, string> = {}, target = '/api/v1/jobs') =>
    rawRequest(port, httpRequest('POST', target, { ...auth, 'content-type': 'application/json', ...headers }, body));

  before(async () => {
    stack = await startStack({ worker: false });
    port = Number(new URL(stack.url).port);
  });
  after(() => stack.stop());

  test('deeply nested JSON anywhere in a body is a 400 naming where', async () => {
    const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
    const deepObject = (n: number) => '{"a":'.repeat(n) + '1' + '}'.repeat(n);
    for (const [body, field] of [
      [`{"capability":"image.generate","prompt":"x","metadata":{"k":${deep(100_000)}}}`, 'metadata.k'],
      [`{"capability":"image.generate","prompt":"x","metadata":${deepObject(5_000)}}`, 'metadata.a'],
      [`{"capability":"video.generate","prompt":"x","settings":{"ratio":${deep(50)}}}`, 'settings.ratio'],
      [deep(300_000), ''],
    ]) {
      const res = await post(body);
      assertClean(res, 400);
      assert.match(res.json.error, /nested more than 32 levels/);
      assert.ok(res.json.error.startsWith(field), `${res.json.error} should start with ${field}`);
    }
    const assets = await post(`{"url":"http://127.0.0.1:9/a.png","name":${deep(1000)}}`, {}, '/api/v1/assets');
    assertClean(assets, 400);
    // Ordinary nesting in metadata is fine.
    const ok = await post(JSON.stringify({ capability: 'image.generate', prompt: 'x', width: 64, height: 64, metadata: { a: { b: { c: [1, [2, [3]]] } } } }));
    assert.equal(ok.status, 201, ok.text);
  });

  test('NUL and unpaired surrogates are refused in every string, naming the field, on either database', async () => {
    const gen = (extra: string) => `{"capability":"image.generate","prompt":"ok",${extra}}`;
    for (const [body, field, target] of [
      [gen('"webhookUrl":"http://127.0.0.1:9/\\u0000"').replace('"prompt":"ok",', '"prompt":"ok",'), 'webhookUrl'],
      ['{"capability":"image.generate","prompt":"a\\u0000b"}', 'prompt'],
      ['{"capability":"image.generate","prompt":"a\\ud800b"}', 'prompt'],
      ['{"capability":"image.generate","prompt":"a\\udc00"}', 'prompt'],
      [gen('"metadata":{"k":"v\\u0000"}'), 'metadata.k'],
      [gen('"metadata":{"list":["x","\\ud83d"]}'), 'metadata.list[1]'],
      [gen('"metadata":{"bad\\u0000key":1}'), 'metadata'],
      [gen('"engine":"lo\\u0000cal"'), 'engine'],
      ['{"capability":"video.generate","prompt":"x","materials":[{"type":"image","url":"http://127.0.0.1:9/a.png","label":"\\ud800"}]}', 'materials[0].label'],
      ['{"url":"http://127.0.0.1:9/a.png","name":"a\\u0000.png"}', 'name', '/api/v1/assets'],
    ] as [string, string, string?][]) {
      const res = await post(body, {}, target);
      assertClean(res, 400);
      assert.ok(res.json.error.startsWith(`${field}: `), `${res.json.error} should name ${field}`);
    }
    // A well-formed surrogate pair (an emoji) is text like any other.
    const emoji = await post('{"capability":"image.generate","prompt":"a \\ud83d\\ude00 b","width":64,"height":64}');
    assert.equal(emoji.status, 201, emoji.text);
    assert.equal(emoji.json.job.prompt, 'a \u{1F600} b');
  });

  test('text no id can be is a 404, on either database: NUL, over-long, odd characters', async () => {
    for (const id of ['job_%00', `job_${'a'.repeat(26)}%00`, 'job_%E2%80%AE', `job_${'z'.repeat(90)}`, '%27%20or%201=1', 'job_01ARZ3NDEKTSV4RRFFQ69G5FAV']) {
      for (const target of [`/api/v1/jobs/${id}`, `/api/v1/assets/${id.replace('job_', 'asset_')}`, `/api/v1/assets/${id.replace('job_', 'asset_')}/download`]) {
        assertClean(await rawRequest(port, httpRequest('GET', target, auth)), 404, id);
      }
      assertClean(await rawRequest(port, httpRequest('POST', `/api/v1/jobs/${id}/cancel`, auth)), 404, id);
    }
    // Percent-escapes that decode to no text at all (a lone surrogate's bytes) are a bad URL.
    assertClean(await rawRequest(port, httpRequest('GET', '/api/v1/jobs/job_%ED%A0%80', auth)), 400, '%ED');
  });

  test('an explicit null is an absent field, also for idempotency: adding "metadata": null to a replay is still a replay', async () => {
    const body = { capability: 'video.generate', prompt: 'a clip', settings: { ratio: '9:16', duration: 5 } };
    const first = await post(JSON.stringify(body), { 'idempotency-key': 'null-replay' });
    assert.equal(first.status, 201, first.text);
    for (const replay of [
      { ...body, metadata: null, webhookUrl: null, engine: null },
      { ...body, settings: { ...body.settings, resolution: null } },
      { ...body, materials: null },
    ]) {
      const res = await post(JSON.stringify(replay), { 'idempotency-key': 'null-replay' });
      assert.equal(res.status, 200, `${JSON.stringify(replay)}: ${res.text}`);
      assert.equal(res.json.reused, true);
      assert.equal(res.json.job.id, first.json.job.id);
    }
    const material = await post(JSON.stringify({ ...body, materials: [{ type: 'image', url: 'http://127.0.0.1:9/a.png', assetId: null, label: null }] }));
    assert.equal(material.status, 201, material.text);
    const asset = await post('{"url":"http://127.0.0.1:1/a.png","name":null,"kind":null}', {}, '/api/v1/assets');
    assertClean(asset, 400);
    assert.match(asset.json.error, /^url: /, 'the nulls were not the problem');
  });

  test('a prompt (or label) of white space only is a 400', async () => {
    for (const prompt of ['   ', '\n\t', '\u3000']) {
      const res = await post(JSON.stringify({ capability: 'image.generate', prompt }));
      assertClean(res, 400);
      assert.equal(res.json.error, 'prompt: must not be blank');
    }
    const label = await post(JSON.stringify({ capability: 'video.generate', prompt: 'x', materials: [{ type: 'image', url: 'http://127.0.0.1:9/a.png', label: ' ' }] }));
    assert.equal(label.json.error, 'materials[0].label: must not be blank');
  });

  test('what the HTTP parser or the router refuses is answered { error, code } too, without echoing the URL', async () => {
    const marker = 'ECHOMARKER';
    const cases: [string, string | Buffer, number][] = [
      ['unknown method', `FOO /api/v1/jobs/${marker} HTTP/1.1\r\nHost: x\r\n\r\n`, 400],
      ['bad request line', `GET /api/v1/${marker} HTTP/9.9\r\nHost: x\r\n\r\n`, 400],
      ['both Content-Length and Transfer-Encoding', `POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400],
      ['a bad chunk size', `POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`, 400],
      ['a header without a colon', `GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\n${marker}\r\n\r\n`, 400],
      ['a control character in the path', `GET /api/v1/jobs/\x01${marker} HTTP/1.1\r\nHost: x\r\n\r\n`, 400],
      ['headers too large', httpRequest('GET', '/api/v1/jobs', { 'x-filler': 'a'.repeat(20_000), 'x-marker': marker }), 431],
      ['a path too large', httpRequest('GET', `/api/v1/jobs/${marker}${'a'.repeat(20_000)}`), 431],
      ['an over-long path parameter', httpRequest('GET', `/api/v1/jobs/${marker}${'a'.repeat(200)}`, auth), 414],
      ['bad percent-encoding', httpRequest('GET', `/api/v1/jobs/%zz${marker}`, auth), 400],
      ['an unknown route', httpRequest('GET', `/api/v1/${marker}`, auth), 404],
      ['an unknown route with a body', httpRequest('POST', `/${marker}`, { 'content-type': 'application/json' }, '{}'), 404],
      ['an unsupported media type', httpRequest('POST', '/api/v1/jobs', { ...auth, 'content-type': `text/${marker}` }, 'hello'), 400],
      ['a Content-Length that is not a number', `POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: ${marker}\r\n\r\n`, 400],
      ['invalid JSON', httpRequest('POST', '/api/v1/jobs', { ...auth, 'content-type': 'application/json' }, `{"${marker}":`), 400],
      ['prototype poisoning', httpRequest('POST', '/api/v1/jobs', { ...auth, 'content-type': 'application/json' }, '{"__proto__":{"x":1},"capability":"image.generate"}'), 400],
    ];
    for (const [what, request, status] of cases) {
      let res: RawResponse;
      try {
        res = await rawRequest(port, request);
      } catch (error) {
        throw new Error(`${what}: ${(error as Error).message}`);
      }
      assert.equal(res.status, status, `${what}: ${res.status} ${res.text}`);
      assertClean(res, status, marker);
      assert.ok(res.headers['x-request-id'], `${what}: X-Request-Id`);
      assert.equal(res.headers['x-content-type-options'], 'nosniff', what);
    }
  });

  test('a 5 MB JSON body sent by fetch (undici) gets a 413 it can read', async () => {
    const body = JSON.stringify({ capability: 'image.generate', prompt: 'x'.repeat(5 * 1024 * 1024) });
    for (const target of ['/api/v1/jobs', '/api/v1/assets']) {
      for (let i = 0; i < 3; i++) {
        const res = await fetch(stack.url + target, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body });
        assert.equal(res.status, 413);
        assert.deepEqual(await res.json(), { error: 'Request body is too large.', code: 'too_large' });
      }
    }
    // Without Content-Length (chunked), the limit is found while reading.
    const chunked = await fetch(stack.url + '/api/v1/jobs', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: new Blob([body]).stream(),
      duplex: 'half',
    } as RequestInit);
    assert.equal(chunked.status, 413);
    assert.equal((await chunked.json()).code, 'too_large');
  });
});

describe('requests that do not arrive in time', () => {
  test('a body that stalls is answered 408 after ZHINIAN_REQUEST_TIMEOUT_SECONDS and the connection closed', async () => {
    const stack = await startStack({ worker: false, env: { ZHINIAN_REQUEST_TIMEOUT_SECONDS: '1' } });
    try {
      const port = Number(new URL(stack.url).port);
      const start = `POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY_A}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"capability":`;
      const res = await rawRequest(port, start, { timeoutMs: 8_000 });
      assertClean(res, 408);
      assert.equal(res.json.code, 'request_timeout');
      assert.ok(res.ms >= 900, `answered after ${res.ms} ms`);
      // Headers that never finish get the same answer.
      const headers = await rawRequest(port, `GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nX-Slow: `, { timeoutMs: 8_000 });
      assert.equal(headers.status, 408);
      // An ordinary request on the same server is unaffected.
      assert.equal((await stack.api('/api/v1/jobs')).status, 200);
    } finally {
      await stack.stop();
    }
  });
});

describe('shutdown', () => {
  test('a request in flight at shutdown is finished; the next one on its connection gets 503 { error, code }', async () => {
    const stack = await startStack({ worker: false, env: { ZHINIAN_SHUTDOWN_GRACE_SECONDS: '5' } });
    const port = Number(new URL(stack.url).port);
    const body = JSON.stringify({ capability: 'image.generate', prompt: 'at shutdown', width: 64, height: 64 });
    const first = `POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY_A}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
    const second = `GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY_A}\r\n\r\n`;
    const answers = await new Promise<string>((resolve) => {
      let stopping: Promise<void> | null = null;
      let text = '';
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.write(first + body.slice(0, 5));
        setTimeout(() => {
          stopping = stack.stop();
          // The rest of the first request, and a second one pipelined behind it.
          setTimeout(() => socket.write(body.slice(5) + second), 100);
        }, 100);
      });
      socket.on('data', (d) => (text += d));
      socket.on('close', () => void stopping?.then(() => resolve(text)));
      socket.on('error', () => {});
    });
    const statuses = [...answers.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [201, 503], answers);
    assert.match(answers, /"code":"shutting_down"/);
  });
});
