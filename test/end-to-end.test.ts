// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { probeFile } from '../src/media/probe.ts';
import { KEY_A, startFileServer, startReceiver, startStack, tempDir, waitFor, waitForJob, WEBHOOK_SECRET, type Stack } from './helpers.ts';
import fs from 'node:fs';
import path from 'node:path';

/** Every capability through the public API and a real worker, outputs decoded. */
describe('end to end on the local engine', () => {
  let stack: Stack;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let files: Awaited<ReturnType<typeof startFileServer>>;

  before(async () => {
    stack = await startStack();
    receiver = await startReceiver();
    const photo = await sharp({ create: { width: 640, height: 480, channels: 3, background: { r: 40, g: 120, b: 200 } } })
      .png()
      .toBuffer();
    const wide = await sharp({ create: { width: 1000, height: 500, channels: 3, background: { r: 200, g: 80, b: 20 } } })
      .png()
      .toBuffer();
    files = await startFileServer({ '/photo.png': { body: photo, type: 'image/png' }, '/wide.png': { body: wide, type: 'image/png' } });
  });
  after(async () => {
    await stack.stop();
    await receiver.close();
    await files.close();
  });

  async function download(assetId: string): Promise<{ file: string; asset: any }> {
    const { body } = await stack.api(`/api/v1/assets/${assetId}`);
    const res = await fetch(`${stack.url}/api/v1/assets/${assetId}/download`, { headers: { authorization: `Bearer ${KEY_A}` } });
    assert.equal(res.status, 200);
    const file = path.join(tempDir(), body.asset.name);
    fs.writeFileSync(file, Buffer.from(await res.arrayBuffer()));
    return { file, asset: body.asset };
  }

  async function runJob(request: object) {
    const created = await stack.api('/api/v1/jobs', { method: 'POST', json: { ...request, webhookUrl: receiver.url } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const job = await waitForJob(stack, created.body.job.id);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    assert.equal(job.progress, 100);
    assert.equal(job.outputAssetIds.length, 1);
    return job;
  }

  test('image.generate makes a PNG of exactly width×height, and a signed webhook arrives', async () => {
    const job = await runJob({ capability: 'image.generate', prompt: '生成一张专业产品主图', width: 720, height: 1280 });
    const { file, asset } = await download(job.outputAssetIds[0]);
    const meta = await sharp(file).metadata();
    assert.equal(meta.format, 'png');
    assert.equal(meta.width, 720);
    assert.equal(meta.height, 1280);
    assert.equal(asset.kind, 'image');
    assert.equal(asset.mimeType, 'image/png');
    assert.equal(asset.width, 720);
    assert.equal(asset.source, 'output');
    assert.equal(asset.jobId, job.id);
    assert.equal(asset.bytes, fs.statSync(file).size);

    const hook = await waitFor(() => receiver.hooks.find((h) => h.body.job.id === job.id), { what: 'webhook' });
    assert.equal(hook.body.event, 'generation.succeeded');
    assert.deepEqual(hook.body.job.outputAssetIds, job.outputAssetIds);
    assert.equal(hook.headers['x-zhinian-event'], 'generation.succeeded');
    assert.match(String(hook.headers['x-zhinian-delivery']), /^whd_/);
    const expected = 'sha256=' + createHmac('sha256', WEBHOOK_SECRET).update(hook.raw).digest('hex');
    assert.equal(hook.headers['x-zhinian-signature'], expected);
  });

  test('image.upscale from a URL input reaches a 3840 long side with the aspect kept', async () => {
    const job = await runJob({ capability: 'image.upscale', imageUrls: [`${files.base}/photo.png`], resolution: '4k' });
    const { file } = await download(job.outputAssetIds[0]);
    const meta = await sharp(file).metadata();
    assert.equal(meta.width, 3840);
    assert.ok(Math.abs(meta.height! - 2880) <= 1);
  });

  test('image.inpaint keeps the original size', async () => {
    const mask = await sharp({ create: { width: 320, height: 240, channels: 3, background: '#000' } })
      .composite([{ input: { create: { width: 80, height: 60, channels: 3, background: '#fff' } }, left: 100, top: 80 }])
      .png()
      .toBuffer();
    const upload = new FormData();
    upload.append('files', new Blob([mask], { type: 'image/png' }), 'mask.png');
    const uploaded = await stack.api('/api/v1/assets', { method: 'POST', body: upload });
    assert.equal(uploaded.status, 201);
    const job = await runJob({
      capability: 'image.inpaint',
      prompt: '把选中区域文字替换成新品上市',
      imageUrls: [`${files.base}/photo.png`],
      materials: [{ type: 'image', assetId: uploaded.body.assets[0].id }],
    });
    const meta = await sharp((await download(job.outputAssetIds[0])).file).metadata();
    assert.equal(meta.width, 640);
    assert.equal(meta.height, 480);
  });

  test('video.generate makes an H.264 MP4 with the asked size and length', async () => {
    const job = await runJob({
      capability: 'video.generate',
      prompt: '生成一条品牌短视频',
      settings: { ratio: 'adaptive', duration: 4, resolution: '480p' },
      materials: [{ type: 'image', url: `${files.base}/wide.png`, label: '@图片1' }],
    });
    const { file, asset } = await download(job.outputAssetIds[0]);
    const probe = await probeFile(file);
    assert.equal(probe.mimeType, 'video/mp4');
    assert.equal(probe.width, 960);
    assert.equal(probe.height, 480);
    assert.ok(Math.abs(probe.durationSeconds! - 4) <= 0.1, `duration ${probe.durationSeconds}`);
    assert.equal(asset.kind, 'video');
    assert.ok(Math.abs(asset.durationSeconds - 4) <= 0.1);
  });

  test('an input URL that cannot be fetched fails the job with an error code', async () => {
    const created = await stack.api('/api/v1/jobs', {
      method: 'POST',
      json: { capability: 'image.upscale', imageUrls: [`${files.base}/missing.png`], webhookUrl: receiver.url },
    });
    const job = await waitForJob(stack, created.body.job.id);
    assert.equal(job.status, 'failed');
    assert.equal(job.error.code, 'input_fetch_failed');
    assert.match(job.error.message, /imageUrls\[0\]/);
    const hook = await waitFor(() => receiver.hooks.find((h) => h.body.job.id === job.id), { what: 'failure webhook' });
    assert.equal(hook.body.event, 'generation.failed');
  });
});
