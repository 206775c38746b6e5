// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import sharp from 'sharp';
import { createUrlSigner } from '../src/assets/signed-url.ts';
import { probeFile } from '../src/media/probe.ts';
import { startFakeEvolink, type FakeEvolink, type FakeEvolinkOptions } from './fakes/evolink.ts';
import { FAKE_VOLC_ACCESS_KEY_ID, FAKE_VOLC_SECRET_ACCESS_KEY, startFakeJimeng, type FakeJimeng, type FakeJimengOptions } from './fakes/jimeng.ts';
import { startFakeSeedance, type FakeSeedance, type FakeSeedanceOptions } from './fakes/seedance.ts';
import { KEY_A, startReceiver, startStack, tempDir, waitFor, waitForJob, WEBHOOK_SECRET, type Stack, openTestDb } from './helpers.ts';

/**
 * The remote engines (Jimeng, EvoLink, Seedance) through the public API against the fake
 * providers: every capability end to end, signed input URLs, engine availability, routing,
 * failover, the circuit breaker and per-engine concurrency across workers. Faults, cancel and
 * a worker killed during a remote task live in remote-faults.test.ts.
 */

const ARK_KEY = 'test-ark-key';
const EVOLINK_KEY = 'sk-evo-test';
const SIGNING_SECRET = 'remote-engines-signing-secret-0123456789';
const TERMINAL = ['succeeded', 'failed', 'expired', 'cancelled'];

type Fakes = { jimeng?: FakeJimeng; seedance?: FakeSeedance; evolink?: FakeEvolink };

/** Credentials and base URLs pointing every configured engine at its fake. */
function providerEnv(f: Fakes): Record<string, string> {
  const env: Record<string, string> = { ZHINIAN_PROVIDER_POLL_INTERVAL_MS: '20' };
  if (f.jimeng) {
    Object.assign(env, {
      ZHINIAN_JIMENG_BASE_URL: f.jimeng.baseUrl,
      ZHINIAN_VOLC_ACCESS_KEY_ID: FAKE_VOLC_ACCESS_KEY_ID,
      ZHINIAN_VOLC_SECRET_ACCESS_KEY: FAKE_VOLC_SECRET_ACCESS_KEY,
    });
  }
  if (f.seedance) Object.assign(env, { ZHINIAN_ARK_BASE_URL: f.seedance.baseUrl, ZHINIAN_ARK_API_KEY: ARK_KEY });
  if (f.evolink) Object.assign(env, { ZHINIAN_EVOLINK_BASE_URL: f.evolink.baseUrl, ZHINIAN_EVOLINK_API_KEY: EVOLINK_KEY });
  return env;
}

interface World {
  jimeng: FakeJimeng;
  seedance: FakeSeedance;
  evolink: FakeEvolink;
  stack: Stack;
  hooks: Awaited<ReturnType<typeof startReceiver>>;
  close(): Promise<void>;
}

/** Three fakes, a webhook receiver and an in-process server + worker wired to them. */
async function world(opts: { jimeng?: FakeJimengOptions; seedance?: FakeSeedanceOptions; evolink?: FakeEvolinkOptions; env?: Record<string, string> } = {}): Promise<World> {
  const jimeng = await startFakeJimeng(opts.jimeng);
  const seedance = await startFakeSeedance(opts.seedance);
  const evolink = await startFakeEvolink(opts.evolink);
  const hooks = await startReceiver();
  const stack = await startStack({
    env: {
      ...providerEnv({ jimeng, seedance, evolink }),
      ZHINIAN_SIGNING_SECRET: SIGNING_SECRET,
      // Jobs are woken in-process; slower idle polling keeps many worlds light on a small machine.
      ZHINIAN_POLL_INTERVAL_MS: '200',
      ...opts.env,
    },
  });
  return {
    jimeng,
    seedance,
    evolink,
    stack,
    hooks,
    async close() {
      await stack.stop().catch(() => {});
      await Promise.all([jimeng.close(), seedance.close(), evolink.close(), hooks.close()].map((p) => p.catch(() => {})));
    },
  };
}

async function worldFor(t: TestContext, opts: Parameters<typeof world>[0] = {}): Promise<World> {
  const w = await world(opts);
  t.after(() => w.close());
  return w;
}

async function createJob(w: World, body: Record<string, unknown>): Promise<any> {
  const res = await w.stack.api('/api/v1/jobs', { method: 'POST', json: { webhookUrl: w.hooks.url, ...body } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.job;
}

const finished = (w: World, id: string, timeoutMs = 30_000) => waitForJob(w.stack, id, TERMINAL, timeoutMs);

async function png(width: number, height: number, background = '#3070c0'): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background } })
    .png()
    .toBuffer();
}

async function upload(stack: Stack, bytes: Buffer, name: string, type = 'image/png'): Promise<any> {
  const form = new FormData();
  form.append('files', new Blob([new Uint8Array(bytes)], { type }), name);
  const res = await stack.api('/api/v1/assets', { method: 'POST', body: form });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.assets[0];
}

/** The job's signed webhook: the signature is checked against the raw body. */
async function webhookOf(w: World, jobId: string): Promise<any> {
  const hook = await waitFor(() => w.hooks.hooks.find((h) => h.body?.job?.id === jobId), { what: `webhook of ${jobId}`, timeoutMs: 15_000 });
  const expected = 'sha256=' + createHmac('sha256', WEBHOOK_SECRET).update(hook.raw).digest('hex');
  assert.equal(hook.headers['x-zhinian-signature'], expected, 'webhook signature');
  assert.equal(hook.headers['x-zhinian-event'], hook.body.event);
  return hook.body;
}

/** An output asset and its bytes, downloaded from our API. */
async function download(stack: Stack, assetId: string): Promise<{ asset: any; bytes: Buffer; contentType: string | null }> {
  const meta = await stack.api(`/api/v1/assets/${assetId}`);
  assert.equal(meta.status, 200, JSON.stringify(meta.body));
  const res = await fetch(`${stack.url}/api/v1/assets/${assetId}/download`, { headers: { authorization: `Bearer ${KEY_A}` } });
  assert.equal(res.status, 200);
  const bytes = Buffer.from(await res.arrayBuffer());
  assert.equal(bytes.length, meta.body.asset.bytes, 'the stored file is complete');
  return { asset: meta.body.asset, bytes, contentType: res.headers.get('content-type') };
}

/** Re-hosted: an `output` asset of this job whose sourceUrl is the provider's link without its signed query. */
function assertRehosted(asset: any, jobId: string, providerBase: string): void {
  assert.equal(asset.source, 'output');
  assert.equal(asset.jobId, jobId);
  assert.ok(typeof asset.sourceUrl === 'string' && asset.sourceUrl.startsWith(`${new URL(providerBase).origin}/files/`), `sourceUrl ${asset.sourceUrl}`);
  assert.ok(!asset.sourceUrl.includes('?'), `sourceUrl keeps no query: ${asset.sourceUrl}`);
}

const jimengSubmits = (f: FakeJimeng) => f.requests.filter((r) => r.query.Action === 'CVSync2AsyncSubmitTask');
const evolinkSubmits = (f: FakeEvolink) => f.requests.filter((r) => r.method === 'POST');

// ---------------------------------------------------------------------------------------------

describe('remote engines', { concurrency: true }, () => {
  describe('every capability on every remote engine, end to end', () => {
    let w: World;
    const jobs: Record<string, any> = {};
    const hooks: Record<string, any> = {};
    let photo: Buffer;
    let wide: Buffer;

    before(async () => {
      w = await world({ evolink: { fetchInputs: true }, seedance: { fetchInputs: true } });
      photo = await png(640, 480);
      wide = await png(1000, 500, '#c05020');
      const mask = await sharp(await png(640, 480, '#000000'))
        .composite([{ input: await png(160, 120, '#ffffff'), left: 200, top: 160 }])
        .png()
        .toBuffer();
      const photoAsset = await upload(w.stack, photo, 'photo.png');
      const maskAsset = await upload(w.stack, mask, 'mask.png');
      const wideAsset = await upload(w.stack, wide, 'wide.png');
      const requests: Record<string, Record<string, unknown>> = {
        'jimeng image.generate': { engine: 'jimeng', capability: 'image.generate', prompt: '生成一张专业产品主图 e2e-jg', width: 720, height: 1280 },
        'jimeng image.inpaint': { engine: 'jimeng', capability: 'image.inpaint', prompt: '把选中区域替换成新品上市 e2e-ji', inputAssetIds: [photoAsset.id, maskAsset.id] },
        'jimeng image.upscale': { engine: 'jimeng', capability: 'image.upscale', inputAssetIds: [photoAsset.id], resolution: '4k' },
        'evolink image.generate': {
          engine: 'evolink',
          capability: 'image.generate',
          prompt: 'a product shot e2e-eg',
          width: 1280,
          height: 720,
          quality: 'high',
          inputAssetIds: [photoAsset.id],
        },
        'seedance video.generate': {
          engine: 'seedance',
          capability: 'video.generate',
          prompt: '生成一条品牌短视频 @图片1 e2e-sv',
          settings: { ratio: 'adaptive', duration: 5, resolution: '720p' },
          materials: [{ type: 'image', assetId: wideAsset.id, label: '@图片1' }],
        },
      };
      await Promise.all(
        Object.entries(requests).map(async ([name, body]) => {
          const created = await createJob(w, body);
          const job = await finished(w, created.id);
          jobs[name] = job;
          hooks[name] = await webhookOf(w, job.id);
        }),
      );
      // Every output must now come from our own storage: the providers are gone.
      await Promise.all([w.jimeng.close(), w.seedance.close(), w.evolink.close()]);
    });
    after(() => w?.close());

    function succeeded(name: string, engine: string, outputs: number): any {
      const job = jobs[name];
      assert.equal(job.status, 'succeeded', `${name}: ${JSON.stringify(job.error)}`);
      assert.equal(job.engine, engine);
      assert.equal(job.progress, 100);
      assert.equal(job.error, null);
      assert.equal(job.outputAssetIds.length, outputs);
      const hook = hooks[name];
      assert.equal(hook.event, 'generation.succeeded');
      assert.deepEqual(hook.job.outputAssetIds, job.outputAssetIds);
      assert.equal(hook.job.engine, engine);
      return job;
    }

    test('jimeng image.generate: every image the task made is re-hosted at exactly width×height', async () => {
      const job = succeeded('jimeng image.generate', 'jimeng', 2); // no force_single: the fake makes 2
      for (const id of job.outputAssetIds) {
        const { asset, bytes, contentType } = await download(w.stack, id);
        assertRehosted(asset, job.id, w.jimeng.baseUrl);
        assert.equal(contentType, 'image/png');
        const meta = await sharp(bytes).metadata();
        assert.deepEqual([meta.format, meta.width, meta.height], ['png', 720, 1280]);
        assert.equal(asset.kind, 'image');
      }
      const submit = jimengSubmits(w.jimeng).find((r) => r.body.prompt.includes('e2e-jg'))!;
      assert.equal(submit.body.req_key, 'jimeng_t2i_v40');
      assert.equal(submit.body.force_single, undefined);
      const task = [...w.jimeng.tasks.values()].find((t) => t.body.prompt.includes('e2e-jg'))!;
      const polls = w.jimeng.requests.filter((r) => r.query.Action === 'CVSync2AsyncGetResult' && r.body.task_id === task.id);
      assert.ok(polls.length >= 1);
      assert.ok(polls.every((p) => p.body.req_key === 'jimeng_t2i_v40' && JSON.parse(p.body.req_json).return_url === true));
    });

    test('jimeng image.inpaint: original and mask go as base64; the output keeps the original size', async () => {
      const job = succeeded('jimeng image.inpaint', 'jimeng', 1);
      const { asset, bytes } = await download(w.stack, job.outputAssetIds[0]);
      assertRehosted(asset, job.id, w.jimeng.baseUrl);
      const meta = await sharp(bytes).metadata();
      assert.deepEqual([meta.width, meta.height], [640, 480]);
      const submit = jimengSubmits(w.jimeng).find((r) => r.body.req_key === 'jimeng_image2image_dream_inpaint')!;
      assert.equal(submit.body.binary_data_base64.length, 2);
    });

    test('jimeng image.upscale: a 3840 long side with the aspect kept', async () => {
      const job = succeeded('jimeng image.upscale', 'jimeng', 1);
      const { asset, bytes } = await download(w.stack, job.outputAssetIds[0]);
      assertRehosted(asset, job.id, w.jimeng.baseUrl);
      const meta = await sharp(bytes).metadata();
      assert.equal(meta.width, 3840);
      assert.ok(Math.abs(meta.height! - 2880) <= 1, `height ${meta.height}`);
      const submit = jimengSubmits(w.jimeng).find((r) => r.body.req_key === 'jimeng_i2i_seed3_tilesr_cvtob')!;
      assert.equal(submit.body.resolution, '4k');
    });

    test('evolink image.generate: the reference reaches the provider by signed URL; output resized to width×height', async () => {
      const job = succeeded('evolink image.generate', 'evolink', 1);
      const { asset, bytes } = await download(w.stack, job.outputAssetIds[0]);
      assertRehosted(asset, job.id, w.evolink.baseUrl);
      const meta = await sharp(bytes).metadata();
      assert.deepEqual([meta.format, meta.width, meta.height], ['png', 1280, 720]);
      const [submit] = evolinkSubmits(w.evolink);
      assert.equal(submit!.body.size, '1536x1024');
      assert.equal(submit!.body.quality, 'high');
      assert.equal(submit!.headers['idempotency-key'], `${job.id}:1`);
      assert.equal(w.evolink.server.inputFetches.length, 1);
      assert.equal(w.evolink.server.inputFetches[0]!.status, 200, 'the provider fetched the signed reference URL without a key');
      assert.equal(w.evolink.server.inputFetches[0]!.bytes, photo.length);
    });

    test('seedance video.generate: the image material goes as a first frame; the MP4 is re-hosted', async () => {
      const job = succeeded('seedance video.generate', 'seedance', 1);
      const { asset, bytes, contentType } = await download(w.stack, job.outputAssetIds[0]);
      assertRehosted(asset, job.id, w.seedance.baseUrl);
      assert.equal(contentType, 'video/mp4');
      assert.equal(asset.kind, 'video');
      const file = path.join(tempDir(), 'out.mp4');
      fs.writeFileSync(file, bytes);
      const probe = await probeFile(file);
      assert.equal(probe.mimeType, 'video/mp4');
      assert.deepEqual([probe.width, probe.height], [320, 240]);
      const create = w.seedance.requests.find((r) => r.method === 'POST')!;
      assert.equal(create.body.model, 'doubao-seedance-2-0-260128');
      assert.deepEqual(
        create.body.content.map((c: any) => c.type + (c.role ? `:${c.role}` : '')),
        ['text', 'image_url:first_frame'],
      );
      assert.equal(create.body.watermark, false);
      assert.equal(create.body.duration, 5);
      assert.equal(w.seedance.server.inputFetches.length, 1);
      assert.equal(w.seedance.server.inputFetches[0]!.status, 200);
      assert.equal(w.seedance.server.inputFetches[0]!.bytes, wide.length);
    });
  });

  describe('remote engines through the API', { concurrency: 3 }, () => {
    test('inputs reach the provider as keyless short-lived signed URLs; a tampered or expired one is refused', async (t) => {
      const w = await worldFor(t, { jimeng: { fetchInputs: true } });
      const reference = await png(800, 600);
      const asset = await upload(w.stack, reference, 'reference.png');
      const other = await upload(w.stack, await png(400, 300, '#10a010'), 'other.png');
      const job = await finished(
        w,
        (await createJob(w, { engine: 'jimeng', capability: 'image.generate', prompt: 'a red fox', inputAssetIds: [asset.id], force_single: true })).id,
      );
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error));

      const [submit] = jimengSubmits(w.jimeng);
      assert.equal(submit!.body.image_urls.length, 1);
      const url: string = submit!.body.image_urls[0];
      assert.match(url, new RegExp(`^${w.stack.url}/api/v1/assets/${asset.id}/download\\?expires=(\\d+)&signature=([0-9a-f]{64})$`));
      assert.ok(!url.includes(KEY_A), 'no API key in the URL');
      const fetched = w.jimeng.server.inputFetches;
      assert.deepEqual(
        fetched.map((f) => [f.url, f.status, f.bytes]),
        [[url, 200, reference.length]],
        'the fake fetched it with no credentials',
      );
      const u = new URL(url);
      const expires = Number(u.searchParams.get('expires'));
      const signature = u.searchParams.get('signature')!;
      const ttl = expires * 1000 - Date.now();
      assert.ok(ttl > 0 && ttl <= 3600_000 + 5_000, `short-lived: expires in ${ttl} ms`);

      // Valid: no key needed, the exact bytes.
      const ok = await fetch(url);
      assert.equal(ok.status, 200);
      assert.deepEqual(Buffer.from(await ok.arrayBuffer()), reference);

      const refused = async (href: string, what: string) => {
        const res = await fetch(href);
        assert.equal(res.status, 401, `${what}: ${href}`);
        assert.equal((await res.json()).code, 'unauthorized');
      };
      const flipped = signature.slice(0, -1) + (signature.endsWith('0') ? '1' : '0');
      await refused(`${w.stack.url}/api/v1/assets/${asset.id}/download?expires=${expires}&signature=${flipped}`, 'tampered signature');
      await refused(`${w.stack.url}/api/v1/assets/${asset.id}/download?expires=${expires + 1}&signature=${signature}`, 'tampered expiry');
      await refused(`${w.stack.url}/api/v1/assets/${other.id}/download?expires=${expires}&signature=${signature}`, 'another asset');
      await refused(`${w.stack.url}/api/v1/assets/${asset.id}/download?expires=${expires}`, 'no signature');
      await refused(`${w.stack.url}/api/v1/assets/${asset.id}/download`, 'neither key nor signature');
      const signer = createUrlSigner(SIGNING_SECRET);
      const stale = signer.sign(asset.id, 60, Date.now() - 3600_000);
      await refused(`${w.stack.url}/api/v1/assets/${asset.id}/download?expires=${stale.expires}&signature=${stale.signature}`, 'expired');
      // Same secret, fresh expiry: accepted, so the refusal above was about the expiry alone.
      const fresh = signer.sign(asset.id, 60);
      assert.equal((await fetch(`${w.stack.url}/api/v1/assets/${asset.id}/download?expires=${fresh.expires}&signature=${fresh.signature}`)).status, 200);
    });

    test('an engine whose credentials are not set is not offered', async (t) => {
      const jimeng = await startFakeJimeng();
      t.after(() => jimeng.close());
      const onlyJimeng = await startStack({ worker: false, env: { ...providerEnv({ jimeng }), ZHINIAN_ENGINES_IMAGE_GENERATE: 'evolink,jimeng' } });
      t.after(() => onlyJimeng.stop());
      const caps = await onlyJimeng.api('/api/v1/capabilities');
      assert.equal(caps.status, 200);
      const enginesOf = (body: any) => Object.fromEntries(body.capabilities.map((c: any) => [c.capability, c.engines]));
      const listed = enginesOf(caps.body);
      assert.deepEqual(listed['image.generate'], ['jimeng']);
      assert.ok(listed['image.inpaint'].includes('jimeng'));
      assert.ok(listed['image.upscale'].includes('jimeng'));
      for (const engines of Object.values(listed) as string[][]) {
        assert.ok(!engines.includes('evolink') && !engines.includes('seedance'), `unconfigured engines listed: ${engines}`);
      }
      const refused = async (body: object, what: string) => {
        const res = await onlyJimeng.api('/api/v1/jobs', { method: 'POST', json: body });
        assert.equal(res.status, 400, `${what}: ${JSON.stringify(res.body)}`);
        assert.equal(res.body.code, 'invalid_request');
        assert.match(res.body.error, /engine/);
      };
      await refused({ capability: 'video.generate', prompt: 'a clip', engine: 'seedance' }, 'seedance without ZHINIAN_ARK_API_KEY');
      await refused({ capability: 'image.generate', prompt: 'a cat', engine: 'evolink' }, 'evolink without ZHINIAN_EVOLINK_API_KEY');

      // Half a credential pair is no credential.
      const halfJimeng = await startStack({
        worker: false,
        env: { ZHINIAN_JIMENG_BASE_URL: jimeng.baseUrl, ZHINIAN_VOLC_ACCESS_KEY_ID: FAKE_VOLC_ACCESS_KEY_ID },
      });
      t.after(() => halfJimeng.stop());
      const halfListed = enginesOf((await halfJimeng.api('/api/v1/capabilities')).body);
      for (const engines of Object.values(halfListed) as string[][]) assert.ok(!engines.includes('jimeng'), `jimeng listed without its secret: ${engines}`);
      const res = await halfJimeng.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'a cat', engine: 'jimeng' } });
      assert.equal(res.status, 400, JSON.stringify(res.body));
      assert.equal(jimeng.requests.length, 0);
    });

    test('routing: without `engine` a job runs on the first engine of the preference list', async (t) => {
      const w = await worldFor(t, { env: { ZHINIAN_ENGINES_IMAGE_GENERATE: 'evolink,jimeng' } });
      const caps = await w.stack.api('/api/v1/capabilities');
      const generate = caps.body.capabilities.find((c: any) => c.capability === 'image.generate');
      assert.deepEqual(generate.engines, ['evolink', 'jimeng']);
      const video = caps.body.capabilities.find((c: any) => c.capability === 'video.generate');
      assert.equal(video.engines[0], 'seedance');

      const created = await createJob(w, { capability: 'image.generate', prompt: 'routed by preference' });
      assert.equal(created.engine, 'evolink');
      const job = await finished(w, created.id);
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
      assert.equal(job.engine, 'evolink');
      assert.equal(w.evolink.submitCount, 1);
      assert.equal(w.jimeng.submitCount, 0);

      const clip = await createJob(w, { capability: 'video.generate', prompt: 'routed video', settings: { duration: 4, resolution: '480p' } });
      assert.equal(clip.engine, 'seedance');
      assert.equal((await finished(w, clip.id)).status, 'succeeded');
      assert.equal(w.seedance.submitCount, 1);
    });

    test('failover: EvoLink refusing our key moves the job to jimeng, which succeeds', async (t) => {
      const w = await worldFor(t, { env: { ZHINIAN_ENGINES_IMAGE_GENERATE: 'evolink,jimeng', ZHINIAN_EVOLINK_API_KEY: 'sk-evo-wrong' } });
      const created = await createJob(w, { capability: 'image.generate', prompt: 'failover on bad auth', force_single: true });
      assert.equal(created.engine, 'evolink');
      const job = await finished(w, created.id);
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
      assert.equal(job.engine, 'jimeng');
      assert.equal(job.outputAssetIds.length, 1);
      assert.equal(w.evolink.submitCount, 1, 'a refused key is not retried');
      assert.equal(w.jimeng.submitCount, 1);
      const hook = await webhookOf(w, job.id);
      assert.equal(hook.event, 'generation.succeeded');
      assert.equal(hook.job.engine, 'jimeng');
    });

    test('failover: EvoLink answering 503 is retried a bounded number of times, then the job moves to jimeng', async (t) => {
      const w = await worldFor(t, { env: { ZHINIAN_ENGINES_IMAGE_GENERATE: 'evolink,jimeng' } });
      w.evolink.setScenario('server_error');
      const created = await createJob(w, { capability: 'image.generate', prompt: 'failover on 503', force_single: true });
      const job = await finished(w, created.id, 40_000);
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
      assert.equal(job.engine, 'jimeng');
      assert.equal(w.evolink.submitCount, 5, 'five tries per call (docs/providers.md §1.3), then the next engine');
      assert.equal(new Set(evolinkSubmits(w.evolink).map((r) => r.headers['idempotency-key'])).size, 1, 'retries reuse one Idempotency-Key');
      assert.equal(w.evolink.tasks.size, 0);
      assert.equal(w.jimeng.submitCount, 1);
    });

    test('a job pinned to an engine never fails over', async (t) => {
      const w = await worldFor(t, { env: { ZHINIAN_ENGINES_IMAGE_GENERATE: 'evolink,jimeng', ZHINIAN_EVOLINK_API_KEY: 'sk-evo-wrong' } });
      const job = await finished(w, (await createJob(w, { engine: 'evolink', capability: 'image.generate', prompt: 'pinned' })).id);
      assert.equal(job.status, 'failed');
      assert.equal(job.engine, 'evolink');
      assert.equal(job.error.code, 'provider_auth');
      assert.match(job.error.message, /Invalid API key/);
      assert.equal(w.jimeng.submitCount, 0);
      assert.equal((await webhookOf(w, job.id)).event, 'generation.failed');
    });

    test('circuit breaker: after 5 consecutive provider failures the engine is skipped without being contacted', async (t) => {
      const w = await worldFor(t, { env: { ZHINIAN_ENGINES_IMAGE_GENERATE: 'evolink,jimeng', ZHINIAN_EVOLINK_API_KEY: 'sk-evo-wrong', ZHINIAN_JIMENG_MAX_CONCURRENCY: '10' } });
      const first = await Promise.all(Array.from({ length: 5 }, (_, i) => createJob(w, { capability: 'image.generate', prompt: `breaker ${i}`, force_single: true })));
      for (const created of first) {
        const job = await finished(w, created.id);
        assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
        assert.equal(job.engine, 'jimeng');
      }
      assert.equal(w.evolink.submitCount, 5);
      const h = await openTestDb(w.stack.dataDir);
      t.after(() => h.close());
      const circuit = await h.db.selectFrom('engine_circuits').selectAll().where('engine', '=', 'evolink').executeTakeFirstOrThrow();
      assert.ok(circuit.consecutive_failures >= 5, `failures ${circuit.consecutive_failures}`);
      assert.ok(Number(circuit.open_until) > Date.now(), 'circuit open');

      const sixth = await createJob(w, { capability: 'image.generate', prompt: 'breaker 6', force_single: true });
      assert.equal(sixth.engine, 'evolink');
      const job = await finished(w, sixth.id);
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
      assert.equal(job.engine, 'jimeng');
      assert.equal(w.evolink.submitCount, 5, 'the open engine was not contacted');
      assert.equal(w.jimeng.submitCount, 6);
    });

    test('provider progress shows as job progress while the task runs', async (t) => {
      const w = await worldFor(t, { evolink: { queuedMs: 50, runningMs: 2000 } });
      const created = await createJob(w, { engine: 'evolink', capability: 'image.generate', prompt: 'progress' });
      const samples: { status: string; progress: number | null }[] = [];
      for (;;) {
        const { body } = await w.stack.api(`/api/v1/jobs/${created.id}`);
        samples.push({ status: body.job.status, progress: body.job.progress });
        if (TERMINAL.includes(body.job.status)) break;
        await delay(50);
      }
      const last = samples.at(-1)!;
      assert.deepEqual(last, { status: 'succeeded', progress: 100 });
      const midway = samples.filter((s) => s.status === 'running' && s.progress !== null && s.progress > 0 && s.progress < 100);
      assert.ok(midway.length > 0, `no progress between 0 and 100 seen: ${JSON.stringify(samples.map((s) => s.progress))}`);
      const values = samples.map((s) => s.progress ?? 0);
      assert.ok(
        values.every((v, i) => i === 0 || v >= values[i - 1]!),
        `progress never goes back: ${values}`,
      );
    });

    test('ZHINIAN_JIMENG_MAX_CONCURRENCY=1 holds across two workers: the provider never has two tasks in flight', async (t) => {
      const w = await worldFor(t, { jimeng: { queuedMs: 50, runningMs: 150 }, env: { ZHINIAN_JIMENG_MAX_CONCURRENCY: '1', ZHINIAN_POLL_INTERVAL_MS: '50' } });
      // Another worker on the same database, with its own connection, woken only by polling.
      const second = await startStack({
        dataDir: w.stack.dataDir,
        server: false,
        env: { ...providerEnv({ jimeng: w.jimeng }), ZHINIAN_SIGNING_SECRET: SIGNING_SECRET, ZHINIAN_JIMENG_MAX_CONCURRENCY: '1' },
      });
      t.after(() => second.stop());
      const created = await Promise.all(
        Array.from({ length: 5 }, (_, i) => createJob(w, { engine: 'jimeng', capability: 'image.generate', prompt: `one at a time ${i}`, force_single: true })),
      );
      for (const c of created) assert.equal((await finished(w, c.id)).status, 'succeeded');
      const tasks = [...w.jimeng.tasks.values()].sort((a, b) => a.createdAt - b.createdAt);
      assert.equal(tasks.length, 5);
      assert.equal(w.jimeng.submitCount, 5);
      const span = w.jimeng.server.clock.queuedMs + w.jimeng.server.clock.runningMs;
      for (let i = 1; i < tasks.length; i++) {
        const gap = tasks[i]!.createdAt - tasks[i - 1]!.createdAt;
        assert.ok(gap >= span, `task ${i} was submitted ${gap} ms after task ${i - 1}, which could not have finished before ${span} ms`);
      }
    });
  });
});
