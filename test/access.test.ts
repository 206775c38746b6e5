// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createUrlSigner } from '../src/assets/index.ts';
import { readOrCreateSecret } from '../src/lib/secret-file.ts';
import { KEY_A, startStack, type Stack } from './helpers.ts';
import { httpRequest, rawRequest, type RawResponse } from './raw-http.ts';
import path from 'node:path';

/**
 * Access is decided on the route that runs, not on the URL text: every spelling of a
 * `/api/v1` path that the router accepts needs a key. Requests go over a raw socket, so no
 * client normalises the path first.
 */
describe('no way into /api/v1 without a key, however the path is spelled', () => {
  let stack: Stack;
  let port: number;
  let assetId: string;
  let otherAssetId: string;
  let jobId: string;

  before(async () => {
    stack = await startStack({ worker: false });
    port = Number(new URL(stack.url).port);
    const upload = async (text: string) => {
      const form = new FormData();
      form.append('files', new Blob([text]), 'a.txt');
      return (await stack.api('/api/v1/assets', { method: 'POST', body: form })).body.assets[0].id as string;
    };
    assetId = await upload('mine');
    otherAssetId = await upload('also mine');
    jobId = (await stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'x', width: 64, height: 64 } })).body.job.id;
  });
  after(() => stack.stop());

  const jobBody = JSON.stringify({ capability: 'image.generate', prompt: 'anonymous', width: 64, height: 64 });
  const paths = () => [
    '/api/v1/jobs',
    `/api/v1/jobs/${jobId}`,
    `/api/v1/jobs/${jobId}/cancel`,
    '/api/v1/assets',
    `/api/v1/assets/${assetId}`,
    `/api/v1/assets/${assetId}/download`,
    '/api/v1/capabilities',
  ];
  /** Every way of writing a path that a router or proxy might treat as the same route. */
  const spellings = (p: string) => [
    p,
    p.replace('/api/', '/%61pi/'),
    p.replace('/v1/', '/%76%31/'),
    p.replace('/api/', '/API/'),
    `${p}/`,
    `${p}//`,
    `/${p}`,
    p.replace('/v1/', '//v1/'),
    p.replace('/v1/', '/v1/./'),
    p.replace('/v1/', '/x/../v1/'),
    `${p};x=1`,
    `${p}%3Bx=1`,
    p.replace(/\/([^/]*)$/, '%2F$1'),
    `${p}?`,
    `${p}#frag`,
    `http://127.0.0.1:${port}${p}`,
    `http://evil.example${p}`,
    `HTTP://127.0.0.1${p.replace('/api/', '/%61pi/')}`,
  ];

  function assertRefused(res: RawResponse, what: string) {
    assert.ok([400, 401, 404, 414].includes(res.status), `${what} answered ${res.status} ${res.text.slice(0, 200)}`);
    assert.equal(typeof res.json?.error, 'string', `${what}: { error } body (${res.text.slice(0, 200)})`);
    assert.equal(typeof res.json?.code, 'string', `${what}: { code } body`);
  }

  for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
    test(`${method} without a key: every spelling of every route is refused`, async () => {
      for (const p of paths()) {
        for (const target of spellings(p)) {
          const body = method === 'POST' || method === 'PUT' || method === 'PATCH' ? jobBody : '';
          const headers: Record<string, string> = body ? { 'content-type': 'application/json' } : {};
          const res = await rawRequest(port, httpRequest(method, target, headers, body));
          if (method === 'HEAD') {
            assert.ok(res.status >= 400, `HEAD ${target} answered ${res.status}`);
            continue;
          }
          assertRefused(res, `${method} ${target}`);
        }
      }
    });
  }

  test('a wrong key, a malformed Authorization header or a key in the query string is refused', async () => {
    for (const headers of [
      { authorization: 'Bearer nope' } as Record<string, string>,
      { authorization: `Basic ${Buffer.from(`x:${KEY_A}`).toString('base64')}` },
      { authorization: `Bearer${KEY_A}` },
      { 'x-zhinian-api-key': 'nope' },
      { authorization: 'Bearer ' },
    ]) {
      const res = await rawRequest(port, httpRequest('GET', '/%61pi/v1/jobs', headers));
      assert.equal(res.status, 401, JSON.stringify(headers));
    }
    for (const target of [`/api/v1/jobs?api_key=${KEY_A}`, `/api/v1/jobs?key=${KEY_A}`]) {
      assert.equal((await rawRequest(port, httpRequest('GET', target))).status, 401, target);
    }
  });

  test('nothing was created by any of the refused requests', async () => {
    const jobs = await stack.api('/api/v1/jobs?limit=200');
    assert.deepEqual(
      jobs.body.jobs.map((j: { id: string }) => j.id),
      [jobId],
    );
    const assets = await stack.api('/api/v1/assets?limit=200');
    assert.equal(assets.body.assets.length, 2);
  });

  test('a key opens every spelling the router accepts (the same route runs)', async () => {
    const auth = { authorization: `Bearer ${KEY_A}` };
    for (const target of ['/%61pi/v1/jobs', '/api/v1/jobs/', `http://127.0.0.1:${port}/api/v1/jobs`]) {
      const res = await rawRequest(port, httpRequest('GET', target, auth));
      assert.equal(res.status, 200, `${target}: ${res.text.slice(0, 200)}`);
      assert.ok(Array.isArray(res.json.jobs));
    }
  });

  test('public routes are exactly health, readiness and the OpenAPI document', async () => {
    for (const target of ['/healthz', '/readyz', '/api/v1/openapi.json', '/%61pi/v1/openapi.json']) {
      assert.equal((await rawRequest(port, httpRequest('GET', target))).status, 200, target);
    }
  });

  test('a signed link opens exactly one asset download and nothing else', async () => {
    const signer = createUrlSigner(readOrCreateSecret(path.join(stack.dataDir, 'signing-secret')).value);
    const { expires, signature } = signer.sign(assetId, 600);
    const q = `expires=${expires}&signature=${signature}`;
    const ok = await rawRequest(port, httpRequest('GET', `/api/v1/assets/${assetId}/download?${q}`));
    assert.equal(ok.status, 200);
    assert.equal(ok.text, 'mine');
    const spelled = await rawRequest(port, httpRequest('GET', `/%61pi/v1/assets/${assetId}/download?${q}`));
    assert.equal(spelled.status, 200, 'the same route, spelled otherwise, checks the same signature');
    for (const target of [
      `/api/v1/assets/${otherAssetId}/download?${q}`,
      `/api/v1/assets/${assetId}?${q}`,
      `/api/v1/assets?${q}`,
      `/api/v1/jobs?${q}`,
      `/api/v1/jobs/${jobId}?${q}`,
      `/api/v1/assets/${assetId}/download?expires=${expires}&signature=${'0'.repeat(64)}`,
      `/api/v1/assets/${assetId}/download?expires=${expires + 1}&signature=${signature}`,
      `/api/v1/assets/${assetId}/download?expires=${expires}&signature=${signature}&signature=${signature}`,
    ]) {
      const res = await rawRequest(port, httpRequest('GET', target));
      assertRefused(res, target);
    }
    const post = await rawRequest(port, httpRequest('POST', `/api/v1/assets?${q}`, { 'content-type': 'application/json' }, '{"url":"http://127.0.0.1:9/x"}'));
    assertRefused(post, 'POST /api/v1/assets with a signature');
  });
});
