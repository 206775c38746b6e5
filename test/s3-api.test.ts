// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { createS3Store, storageKeyFor, type Store } from '../src/assets/index.ts';
import { KEY_A, KEY_B, startStack, waitForJob, type Stack } from './helpers.ts';
import { startS3Server, type S3Server } from './s3-server.ts';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function upload(stack: Stack, name: string, body: Buffer, type: string) {
  const form = new FormData();
  form.append('files', new Blob([new Uint8Array(body)], { type }), name);
  const res = await stack.api('/api/v1/assets', { method: 'POST', body: form });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body.assets[0];
}

async function download(stack: Stack, id: string, init: { headers?: Record<string, string>; key?: string; redirect?: RequestRedirect } = {}) {
  const headers: Record<string, string> = { ...init.headers };
  if (init.key !== '') headers.authorization = `Bearer ${init.key ?? KEY_A}`;
  const res = await fetch(`${stack.url}/api/v1/assets/${id}/download`, { headers, redirect: init.redirect ?? 'follow' });
  return { res, bytes: Buffer.from(await res.arrayBuffer()) };
}

async function runJob(stack: Stack, request: object) {
  const created = await stack.api('/api/v1/jobs', { method: 'POST', json: request });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const job = await waitForJob(stack, created.body.job.id);
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  assert.equal(job.outputAssetIds.length, 1);
  return job;
}

/** Files left in a stack's temp dir (uploads and work dirs must not stay behind). */
function leftoverTempFiles(stack: Stack): string[] {
  const dir = path.join(stack.dataDir, 'tmp');
  return fs.existsSync(dir)
    ? fs
        .readdirSync(dir, { recursive: true })
        .map(String)
        .filter((f) => fs.statSync(path.join(dir, f)).isFile())
    : [];
}

describe('assets and jobs on S3-compatible storage (s3rver on loopback)', () => {
  let s3: S3Server;
  let bucket: Store;
  let stack: Stack;
  let photo: Buffer;

  before(async () => {
    s3 = await startS3Server();
    bucket = await createS3Store(s3.options);
    stack = await startStack({ env: s3.env });
    photo = await sharp(randomBytes(160 * 120 * 3), { raw: { width: 160, height: 120, channels: 3 } })
      .png()
      .toBuffer();
  });
  after(async () => {
    await stack.stop();
    await s3.close();
  });

  test('an upload lands in the bucket, not on the data disk, and no temp file stays', async () => {
    const asset = await upload(stack, 'photo.png', photo, 'image/png');
    assert.equal(asset.sha256, sha256(photo));
    assert.equal(asset.width, 160);
    assert.deepEqual(await bucket.stat(storageKeyFor(asset.id)), { bytes: photo.length });
    assert.equal(fs.existsSync(path.join(stack.dataDir, 'assets')), false);
    assert.deepEqual(leftoverTempFiles(stack), []);
    const { res, bytes } = await download(stack, asset.id);
    assert.equal(res.status, 200);
    assert.equal(sha256(bytes), asset.sha256);
  });

  test('/readyz checks the bucket: 200 when it exists, 503 storage unavailable when it does not', async () => {
    const res = await fetch(`${stack.url}/readyz`);
    assert.equal(res.status, 200);
    assert.equal((await res.json()).storage, 'ok');
    const missing = await startStack({ env: { ...s3.env, ZHINIAN_S3_BUCKET: 'no-such-bucket' }, worker: false });
    try {
      const down = await fetch(`${missing.url}/readyz`);
      assert.equal(down.status, 503);
      assert.deepEqual(await down.json(), { status: 'unavailable', database: 'ok', storage: 'unavailable' });
    } finally {
      await missing.stop();
    }
  });

  test('image.generate output downloads through the API with Range and ETag', async () => {
    const job = await runJob(stack, { capability: 'image.generate', prompt: 's3 output', width: 256, height: 192 });
    const { body } = await stack.api(`/api/v1/assets/${job.outputAssetIds[0]}`);
    const asset = body.asset;
    assert.deepEqual(await bucket.stat(storageKeyFor(asset.id)), { bytes: asset.bytes });

    const full = await download(stack, asset.id);
    assert.equal(full.res.status, 200);
    assert.equal(full.res.headers.get('etag'), `"${asset.sha256}"`);
    assert.equal(full.res.headers.get('content-type'), 'image/png');
    assert.equal(full.res.headers.get('accept-ranges'), 'bytes');
    assert.equal(sha256(full.bytes), asset.sha256);
    assert.equal((await sharp(full.bytes).metadata()).width, 256);

    const first = await download(stack, asset.id, { headers: { range: 'bytes=0-0' } });
    assert.equal(first.res.status, 206);
    assert.equal(first.res.headers.get('content-range'), `bytes 0-0/${asset.bytes}`);
    assert.deepEqual(first.bytes, full.bytes.subarray(0, 1));

    const middle = await download(stack, asset.id, { headers: { range: 'bytes=100-299' } });
    assert.equal(middle.res.status, 206);
    assert.equal(middle.res.headers.get('content-length'), '200');
    assert.deepEqual(middle.bytes, full.bytes.subarray(100, 300));

    const suffix = await download(stack, asset.id, { headers: { range: 'bytes=-50' } });
    assert.equal(suffix.res.status, 206);
    assert.equal(suffix.res.headers.get('content-range'), `bytes ${asset.bytes - 50}-${asset.bytes - 1}/${asset.bytes}`);
    assert.deepEqual(suffix.bytes, full.bytes.subarray(-50));

    const beyond = await download(stack, asset.id, { headers: { range: `bytes=${asset.bytes}-` } });
    assert.equal(beyond.res.status, 416);

    const cached = await download(stack, asset.id, { headers: { 'if-none-match': `"${asset.sha256}"` } });
    assert.equal(cached.res.status, 304);
    assert.equal(cached.bytes.length, 0);

    const staleIfRange = await download(stack, asset.id, { headers: { range: 'bytes=0-9', 'if-range': '"other"' } });
    assert.equal(staleIfRange.res.status, 200);
    assert.equal(staleIfRange.bytes.length, asset.bytes);

    assert.equal((await download(stack, asset.id, { key: KEY_B })).res.status, 404);
  });

  test('image.upscale reads its input asset from the bucket', async () => {
    const input = await upload(stack, 'small.png', photo, 'image/png');
    const job = await runJob(stack, { capability: 'image.upscale', inputAssetIds: [input.id], resolution: '2k' });
    const { res, bytes } = await download(stack, job.outputAssetIds[0]);
    assert.equal(res.status, 200);
    const meta = await sharp(bytes).metadata();
    assert.ok(Math.max(meta.width!, meta.height!) > 160, `upscaled to ${meta.width}x${meta.height}`);
    assert.equal(Math.round((meta.width! / meta.height!) * 100), Math.round((160 / 120) * 100));
    assert.deepEqual(leftoverTempFiles(stack), []);
  });
});

describe('downloads redirect to presigned URLs with ZHINIAN_S3_PRESIGN=true', () => {
  let s3: S3Server;
  let stack: Stack;
  let photo: Buffer;
  let asset: any;

  before(async () => {
    s3 = await startS3Server({ prefix: 'presigned/' });
    stack = await startStack({ env: { ...s3.env, ZHINIAN_S3_PRESIGN: 'true' } });
    photo = await sharp(randomBytes(64 * 48 * 3), { raw: { width: 64, height: 48, channels: 3 } })
      .png()
      .toBuffer();
    asset = await upload(stack, 'redirected photo.png', photo, 'image/png');
  });
  after(async () => {
    await stack.stop();
    await s3.close();
  });

  test('the owner gets 302 to a presigned URL that serves the bytes without an API key', async () => {
    const { res } = await download(stack, asset.id, { redirect: 'manual' });
    assert.equal(res.status, 302);
    const location = res.headers.get('location')!;
    assert.ok(location.startsWith(`${s3.endpoint}/${s3.bucket}/presigned/`), location);
    assert.ok(new URL(location).searchParams.has('X-Amz-Signature'));
    assert.equal(res.headers.get('cache-control'), 'private, no-store');
    assert.equal(res.headers.get('etag'), null, 'the redirect is not the representation');

    const direct = await fetch(location);
    assert.equal(direct.status, 200);
    assert.equal(direct.headers.get('content-type'), 'image/png');
    assert.equal(direct.headers.get('content-disposition'), 'attachment; filename="redirected photo.png"');
    assert.equal(sha256(Buffer.from(await direct.arrayBuffer())), asset.sha256);
  });

  test('a client following the redirect gets the bytes and ranges from the bucket', async () => {
    const followed = await download(stack, asset.id);
    assert.equal(followed.res.status, 200);
    assert.equal(sha256(followed.bytes), asset.sha256);
    const ranged = await download(stack, asset.id, { headers: { range: 'bytes=10-19' } });
    assert.equal(ranged.res.status, 206);
    assert.deepEqual(ranged.bytes, photo.subarray(10, 20));
  });

  test('a matching If-None-Match answers 304 without a redirect', async () => {
    const { res } = await download(stack, asset.id, { headers: { 'if-none-match': `"${asset.sha256}"` }, redirect: 'manual' });
    assert.equal(res.status, 304);
    assert.equal(res.headers.get('location'), null);
    assert.equal(res.headers.get('etag'), `"${asset.sha256}"`);
  });

  test('another client gets 404 and no key gets 401, neither with a Location', async () => {
    const other = await download(stack, asset.id, { key: KEY_B, redirect: 'manual' });
    assert.equal(other.res.status, 404);
    assert.equal(other.res.headers.get('location'), null);
    const anonymous = await download(stack, asset.id, { key: '', redirect: 'manual' });
    assert.equal(anonymous.res.status, 401);
    assert.equal(anonymous.res.headers.get('location'), null);
  });
});
