// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { callApi, KEY_A, KEY_B, startStack, type Stack } from './helpers.ts';

/** API keys, client isolation, and the endpoints that describe the API itself. */
describe('authentication, isolation and meta endpoints', () => {
  let stack: Stack;
  let jobA: any;
  let assetA: any;
  let jobB: any;
  let assetB: any;

  const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
  /** A raw request with exactly the headers given: no key is added. */
  const bare = (path: string, init: RequestInit & { json?: unknown } = {}) => callApi(stack.url, path, { ...init, key: '' });

  async function uploadText(key: string, name: string, text: string) {
    const form = new FormData();
    form.append('files', new Blob([text], { type: 'text/plain' }), name);
    const res = await stack.api('/api/v1/assets', { method: 'POST', body: form, key });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return res.body.assets[0];
  }

  async function createJob(key: string, prompt: string) {
    const res = await stack.api('/api/v1/jobs', { method: 'POST', key, json: { capability: 'image.generate', prompt, width: 64, height: 64 } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return res.body.job;
  }

  function assertErrorBody(body: unknown) {
    assert.equal(typeof body, 'object');
    assert.ok(body !== null);
    assert.equal(typeof (body as { error: unknown }).error, 'string');
    assert.ok((body as { error: string }).error.length > 0);
  }

  before(async () => {
    // No worker: the jobs here only need to exist, and stay queued so cancel has something to do.
    stack = await startStack({ worker: false });
    jobA = await createJob(KEY_A, 'client A job');
    assetA = await uploadText(KEY_A, 'a.txt', 'belongs to client A');
    jobB = await createJob(KEY_B, 'client B job');
    assetB = await uploadText(KEY_B, 'b.txt', 'belongs to client B');
  });
  after(async () => {
    await stack.stop();
  });

  describe('API keys', () => {
    test('Authorization: Bearer <key> is accepted', async () => {
      const res = await bare('/api/v1/jobs', { headers: { authorization: `Bearer ${KEY_A}` } });
      assert.equal(res.status, 200);
      assert.ok(res.body.jobs.some((j: any) => j.id === jobA.id));
    });

    test('X-Zhinian-Api-Key: <key> is accepted and identifies the same client', async () => {
      const res = await bare('/api/v1/jobs', { headers: { 'x-zhinian-api-key': KEY_B } });
      assert.equal(res.status, 200);
      assert.deepEqual(
        res.body.jobs.map((j: any) => j.id),
        [jobB.id],
      );
      const one = await bare(`/api/v1/assets/${assetB.id}`, { headers: { 'x-zhinian-api-key': KEY_B } });
      assert.equal(one.status, 200);
      assert.equal(one.body.asset.id, assetB.id);
    });

    test('a request without a key answers 401 with { error }', async () => {
      for (const [method, path] of [
        ['GET', '/api/v1/jobs'],
        ['POST', '/api/v1/jobs'],
        ['GET', '/api/v1/assets'],
        ['GET', '/api/v1/capabilities'],
        ['GET', `/api/v1/jobs/${jobA.id}`],
        ['GET', `/api/v1/assets/${assetA.id}/download`],
      ]) {
        const res = await bare(path, { method, ...(method === 'POST' ? { json: { capability: 'image.generate', prompt: 'x' } } : {}) });
        assert.equal(res.status, 401, `${method} ${path}`);
        assertErrorBody(res.body);
      }
    });

    test('a wrong key answers 401, in either header', async () => {
      const bearer = await bare('/api/v1/jobs', { headers: { authorization: 'Bearer not-a-real-key' } });
      assert.equal(bearer.status, 401);
      assertErrorBody(bearer.body);
      const header = await bare('/api/v1/jobs', { headers: { 'x-zhinian-api-key': 'not-a-real-key' } });
      assert.equal(header.status, 401);
      assertErrorBody(header.body);
    });

    test('a malformed Authorization header ("Basic x") answers 401', async () => {
      const basic = await bare('/api/v1/jobs', { headers: { authorization: 'Basic x' } });
      assert.equal(basic.status, 401);
      assertErrorBody(basic.body);
      const keyOnly = await bare('/api/v1/jobs', { headers: { authorization: KEY_A } });
      assert.equal(keyOnly.status, 401);
      assertErrorBody(keyOnly.body);
    });

    test('a prefix of a valid key answers 401', async () => {
      const res = await bare('/api/v1/jobs', { headers: { authorization: `Bearer ${KEY_A.slice(0, -1)}` } });
      assert.equal(res.status, 401);
      assertErrorBody(res.body);
    });
  });

  describe('client isolation', () => {
    test("client B gets 404 (never 403) for client A's job", async () => {
      const res = await stack.api(`/api/v1/jobs/${jobA.id}`, { key: KEY_B });
      assert.equal(res.status, 404);
      assertErrorBody(res.body);
    });

    test("client B gets 404 for client A's asset and its download", async () => {
      const meta = await stack.api(`/api/v1/assets/${assetA.id}`, { key: KEY_B });
      assert.equal(meta.status, 404);
      assertErrorBody(meta.body);
      const download = await stack.api(`/api/v1/assets/${assetA.id}/download`, { key: KEY_B });
      assert.equal(download.status, 404);
      assertErrorBody(download.body);
    });

    test("client B cannot cancel client A's job: 404, and the job is untouched", async () => {
      const res = await stack.api(`/api/v1/jobs/${jobA.id}/cancel`, { method: 'POST', key: KEY_B });
      assert.equal(res.status, 404);
      assertErrorBody(res.body);
      const still = await stack.api(`/api/v1/jobs/${jobA.id}`, { key: KEY_A });
      assert.equal(still.body.job.status, 'queued');
    });

    test("the answers for another client's ids equal those for ids that do not exist", async () => {
      const missingJob = await stack.api('/api/v1/jobs/job_00000000000000000000000000', { key: KEY_B });
      const foreignJob = await stack.api(`/api/v1/jobs/${jobA.id}`, { key: KEY_B });
      assert.equal(missingJob.status, foreignJob.status);
      assert.deepEqual(missingJob.body, foreignJob.body);
      const missingAsset = await stack.api('/api/v1/assets/asset_00000000000000000000000000', { key: KEY_B });
      const foreignAsset = await stack.api(`/api/v1/assets/${assetA.id}`, { key: KEY_B });
      assert.equal(missingAsset.status, foreignAsset.status);
      assert.deepEqual(missingAsset.body, foreignAsset.body);
    });

    test("client B's job and asset lists hold only B's items", async () => {
      const jobs = await stack.api('/api/v1/jobs?limit=200', { key: KEY_B });
      assert.equal(jobs.status, 200);
      assert.deepEqual(
        jobs.body.jobs.map((j: any) => j.id),
        [jobB.id],
      );
      const assets = await stack.api('/api/v1/assets?limit=200', { key: KEY_B });
      assert.equal(assets.status, 200);
      assert.deepEqual(
        assets.body.assets.map((a: any) => a.id),
        [assetB.id],
      );
      const aJobs = await stack.api('/api/v1/jobs?limit=200', { key: KEY_A });
      assert.ok(!aJobs.body.jobs.some((j: any) => j.id === jobB.id));
      const aAssets = await stack.api('/api/v1/assets?limit=200', { key: KEY_A });
      assert.ok(!aAssets.body.assets.some((a: any) => a.id === assetB.id));
    });
  });

  describe('meta endpoints', () => {
    test('GET /api/v1/openapi.json answers 200 without a key with an OpenAPI 3.1 document of every path', async () => {
      const res = await bare('/api/v1/openapi.json');
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /application\/json/);
      assert.equal(typeof res.body.openapi, 'string');
      assert.ok(res.body.openapi.startsWith('3.1'), res.body.openapi);
      for (const path of [
        '/api/v1/jobs',
        '/api/v1/jobs/{id}',
        '/api/v1/jobs/{id}/cancel',
        '/api/v1/assets',
        '/api/v1/assets/{id}',
        '/api/v1/assets/{id}/download',
        '/api/v1/capabilities',
      ]) {
        assert.ok(res.body.paths?.[path], `openapi paths lack ${path}`);
      }
      assert.ok(res.body.paths['/api/v1/jobs'].post, 'POST /jobs');
      assert.ok(res.body.paths['/api/v1/jobs'].get, 'GET /jobs');
      assert.ok(res.body.paths['/api/v1/jobs/{id}/cancel'].post, 'POST /jobs/{id}/cancel');
      assert.ok(res.body.paths['/api/v1/assets'].post, 'POST /assets');
      assert.ok(res.body.paths['/api/v1/assets'].get, 'GET /assets');
    });

    test('the OpenAPI CreateJobRequest schema lists the capability, ratio and resolution values of the contract', async () => {
      const { body: doc } = await bare('/api/v1/openapi.json');
      const create = doc.components?.schemas?.CreateJobRequest;
      assert.ok(create, 'components.schemas.CreateJobRequest');
      const prop = (schema: any, name: string) => {
        const found = findProperty(doc, schema, name);
        assert.ok(found, `CreateJobRequest has no property ${name}`);
        return found;
      };
      const sorted = (values: unknown[]) => [...values].map(String).sort();
      assert.deepEqual(sorted(enumValues(doc, prop(create, 'capability'))), sorted(['image.generate', 'image.inpaint', 'image.upscale', 'video.generate']));
      const settings = prop(create, 'settings');
      assert.deepEqual(sorted(enumValues(doc, prop(settings, 'ratio'))), sorted(['16:9', '4:3', '1:1', '3:4', '9:16', '21:9', 'adaptive']));
      assert.deepEqual(sorted(enumValues(doc, prop(settings, 'resolution'))), sorted(['480p', '720p', '1080p']));
      assert.deepEqual(sorted(enumValues(doc, prop(create, 'resolution'))), sorted(['2k', '4k', '8k']));
      assert.deepEqual(sorted(enumValues(doc, prop(create, 'quality'))), sorted(['low', 'medium', 'high', 'auto']));
    });

    test('/healthz and /readyz answer 200 without a key', async () => {
      for (const path of ['/healthz', '/readyz']) {
        const res = await bare(path);
        assert.equal(res.status, 200, path);
      }
    });

    test('/api/v1/capabilities lists the four capabilities, each with the local engine and a params object', async () => {
      const res = await stack.api('/api/v1/capabilities');
      assert.equal(res.status, 200);
      const list = res.body.capabilities;
      assert.ok(Array.isArray(list));
      assert.deepEqual(list.map((c: any) => c.capability).sort(), ['image.generate', 'image.inpaint', 'image.upscale', 'video.generate']);
      for (const c of list) {
        assert.equal(typeof c.description, 'string', c.capability);
        assert.ok(Array.isArray(c.engines), c.capability);
        assert.ok(c.engines.includes('local'), c.capability);
        assert.equal(typeof c.params, 'object', c.capability);
        assert.ok(c.params !== null && !Array.isArray(c.params), c.capability);
      }
      const byName = Object.fromEntries(list.map((c: any) => [c.capability, c]));
      assert.ok('width' in byName['image.generate'].params);
      assert.ok('resolution' in byName['image.upscale'].params);
      assert.ok('settings' in byName['video.generate'].params);
    });

    test('an unknown route answers 404 with JSON { error }', async () => {
      const api = await stack.api('/api/v1/nothing-here');
      assert.equal(api.status, 404);
      assert.match(api.headers.get('content-type') ?? '', /application\/json/);
      assertErrorBody(api.body);
      const root = await bare('/nothing-here');
      assert.equal(root.status, 404);
      assertErrorBody(root.body);
    });
  });

  describe('identifiers and times', () => {
    test('job ids start with job_ and asset ids with asset_, followed by a URL-safe part', async () => {
      assert.match(jobA.id, /^job_[A-Za-z0-9_-]+$/);
      assert.match(assetA.id, /^asset_[A-Za-z0-9_-]+$/);
      assert.notEqual(jobA.id, jobB.id);
      assert.notEqual(assetA.id, assetB.id);
    });

    test('later ids sort after earlier ones', async () => {
      const first = await createJob(KEY_A, 'first');
      const second = await createJob(KEY_A, 'second');
      assert.ok(first.id < second.id, `${first.id} !< ${second.id}`);
    });

    test('job and asset times are ISO 8601 UTC with milliseconds', async () => {
      const { body } = await stack.api(`/api/v1/jobs/${jobA.id}`);
      assert.match(body.job.createdAt, ISO_MS);
      assert.match(body.job.updatedAt, ISO_MS);
      for (const field of ['startedAt', 'finishedAt']) {
        const value = body.job[field];
        assert.ok(value === null || ISO_MS.test(value), `${field}: ${value}`);
      }
      const { body: a } = await stack.api(`/api/v1/assets/${assetA.id}`);
      assert.match(a.asset.createdAt, ISO_MS);
      const cancelled = await stack.api(`/api/v1/jobs/${(await createJob(KEY_A, 'to cancel')).id}/cancel`, { method: 'POST' });
      assert.equal(cancelled.status, 200);
      assert.match(cancelled.body.job.finishedAt, ISO_MS);
      assert.match(cancelled.body.job.updatedAt, ISO_MS);
    });
  });
});

/** Follows a local `$ref` (`#/…`) inside the document. */
function resolve(doc: any, schema: any): any {
  let s = schema;
  for (let i = 0; i < 20 && s && typeof s === 'object' && typeof s.$ref === 'string' && s.$ref.startsWith('#/'); i++) {
    s = s.$ref
      .slice(2)
      .split('/')
      .reduce((node: any, part: string) => node?.[part.replace(/~1/g, '/').replace(/~0/g, '~')], doc);
  }
  return s;
}

/** A property of an object schema, looking through $ref, allOf, anyOf and oneOf. */
function findProperty(doc: any, schema: any, name: string): any {
  const s = resolve(doc, schema);
  if (!s || typeof s !== 'object') return undefined;
  if (s.properties?.[name]) return s.properties[name];
  for (const key of ['allOf', 'anyOf', 'oneOf']) {
    for (const sub of s[key] ?? []) {
      const found = findProperty(doc, sub, name);
      if (found) return found;
    }
  }
  return undefined;
}

/** Every value a schema admits when it is an enumeration (`enum`, or `const`s under anyOf/oneOf). */
function enumValues(doc: any, schema: any): unknown[] {
  const s = resolve(doc, schema);
  if (!s || typeof s !== 'object') return [];
  const out: unknown[] = [];
  if (Array.isArray(s.enum)) out.push(...s.enum);
  if ('const' in s) out.push(s.const);
  for (const key of ['allOf', 'anyOf', 'oneOf']) for (const sub of s[key] ?? []) out.push(...enumValues(doc, sub));
  return [...new Set(out)];
}
