import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { callApi, killAndWait, startFileServer, tempDir, testEnv, waitFor, waitForJob } from './helpers.ts';

const ROOT = path.resolve(import.meta.dirname, '..');

/** What `npm start` runs: the bundle in dist/, with its worker scripts beside it. */
test('the built service runs every capability of the local engine', async (t) => {
  execFileSync(process.execPath, [path.join(ROOT, 'scripts/build.mjs')], { cwd: ROOT, stdio: 'inherit' });
  const child = spawn(process.execPath, [path.join(ROOT, 'dist/cli/start.mjs')], { cwd: ROOT, env: { ...process.env, ...testEnv(tempDir()) }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  t.after(() => killAndWait(child));
  const url = await waitFor(() => /running at (http:\/\/\S+)/.exec(output)?.[1], { what: 'the built server to start', timeoutMs: 30_000 });
  const png = await sharp({ create: { width: 320, height: 240, channels: 3, background: '#a33' } }).png().toBuffer();
  const mask = await sharp({ create: { width: 320, height: 240, channels: 3, background: '#000' } })
    .composite([{ input: { create: { width: 40, height: 40, channels: 3, background: '#fff' } }, left: 100, top: 100 }])
    .png()
    .toBuffer();
  const files = await startFileServer({ '/a.png': { body: png, type: 'image/png' }, '/mask.png': { body: mask, type: 'image/png' } });
  t.after(() => files.close());
  const stack = { api: (p: string, init?: any) => callApi(url, p, init) };
  for (const body of [
    { capability: 'image.generate', prompt: 'built', width: 256, height: 128 },
    { capability: 'image.upscale', imageUrls: [`${files.base}/a.png`], resolution: '2k' },
    { capability: 'image.inpaint', prompt: 'fill', imageUrls: [`${files.base}/a.png`, `${files.base}/mask.png`] },
    { capability: 'video.generate', prompt: 'built video', settings: { duration: 4, resolution: '480p' } },
  ]) {
    const created = await stack.api('/api/v1/jobs', { method: 'POST', json: body });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const job = await waitForJob(stack, created.body.job.id, undefined, 60_000);
    assert.equal(job.status, 'succeeded', `${body.capability}: ${JSON.stringify(job.error)}\n${output.slice(-2000)}`);
  }
});
