// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { callApi, KEY_A, killAndWait, openTestDb, startFileServer, tempDir, testEnv, waitFor, waitForJob } from './helpers.ts';

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
  const png = await sharp({ create: { width: 320, height: 240, channels: 3, background: '#a33' } })
    .png()
    .toBuffer();
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

/**
 * `npm start` / `server` / `worker` hand SIGTERM to the node process itself (the scripts `exec`
 * it), and that process stops listening, lets in-flight requests finish within
 * ZHINIAN_SHUTDOWN_GRACE_SECONDS, closes what is left and exits: a stalled client cannot keep it
 * alive, and nothing is left running or listening.
 */
for (const script of ['start', 'server', 'worker'] as const) {
  test(`SIGTERM to \`npm ${script === 'start' ? 'start' : `run ${script}`}\` stops the service inside the grace period, even with a stalled client`, async (t) => {
    const dataDir = tempDir();
    const env = { ...process.env, ...testEnv(dataDir), LOG_LEVEL: 'info', ZHINIAN_SHUTDOWN_GRACE_SECONDS: '2' };
    const npm = spawn('npm', script === 'start' ? ['start'] : ['run', script], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    npm.stdout.on('data', (d) => (output += d));
    npm.stderr.on('data', (d) => (output += d));
    t.after(() => killAndWait(npm));
    const exited = new Promise<number | null>((r) => npm.once('exit', (code) => r(code)));
    await waitFor(() => /running at |listening at |worker started/.test(output), { what: `npm ${script} to start`, timeoutMs: 60_000 });
    const node = childrenOf(npm.pid!);
    const commands = node.map((pid) => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' '));
    assert.equal(node.length, 1, `npm runs one process: ${JSON.stringify(commands)}`);
    assert.match(commands[0]!, new RegExp(`^\\S*node .*dist/cli/${script}\\.mjs`), 'npm runs node itself (exec), not a shell that would swallow the signal');

    let stalled: net.Socket | null = null;
    let inFlight: Promise<{ status: number } | Error> | null = null;
    let runningJobId: string | null = null;
    if (script !== 'worker') {
      const url = new URL(/(?:running|listening) at (http:\/\/[0-9.:]+)/.exec(output)![1]!);
      const port = Number(url.port);
      if (script === 'start') {
        // A long job the embedded worker is running when the signal comes: it is handed back.
        const created = await callApi(url.origin, '/api/v1/jobs', {
          method: 'POST',
          json: { capability: 'video.generate', prompt: 'long', settings: { duration: 15, resolution: '1080p' } },
        });
        runningJobId = created.body.job.id;
        await waitFor(async () => (await callApi(url.origin, `/api/v1/jobs/${runningJobId}`)).body.job.status === 'running', { what: 'the job to start' });
      }
      // A client that sent half a body and then nothing: only the grace period ends it.
      stalled = net.connect(port, '127.0.0.1');
      stalled.on('error', () => {});
      stalled.write(`POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY_A}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"capability":`);
      // A request in flight when the signal comes is finished (its last bytes come after it).
      inFlight = slowJobRequest(port, 600).catch((e: Error) => e);
      await new Promise((r) => setTimeout(r, 200));
    }
    const signalledAt = Date.now();
    npm.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 25_000))]);
    const tookMs = Date.now() - signalledAt;
    assert.notEqual(code, 'hung', `npm ${script} still running 25 s after SIGTERM:\n${output.slice(-2000)}`);
    assert.equal(code, 0, output.slice(-2000));
    assert.ok(tookMs < 2_000 + 10_000, `took ${tookMs} ms`);
    await waitFor(() => node.every((pid) => !isAlive(pid)), { timeoutMs: 5_000, what: 'the node process to be gone' });
    if (inFlight) {
      const answer = await inFlight;
      assert.ok(!(answer instanceof Error), `the in-flight request was cut: ${String(answer)}`);
      assert.equal(answer.status, 201);
    }
    if (stalled) assert.ok(stalled.destroyed || stalled.readableEnded || (await closedWithin(stalled, 2_000)), 'the stalled connection was closed');
    if (runningJobId) {
      const handle = await openTestDb(dataDir);
      try {
        const row = await handle.db.selectFrom('jobs').select(['status', 'lease_owner', 'run_at']).where('id', '=', runningJobId).executeTakeFirstOrThrow();
        // Handed back: no owner, claimable now by any worker (it keeps its start time, so its status stays running).
        assert.equal(row.status, 'running');
        assert.equal(row.lease_owner, null, 'the running job was handed back to the queue');
        assert.ok(Number(row.run_at) <= Date.now());
      } finally {
        await handle.close();
      }
    }
    assert.match(output, /shutting down/);
  });
}

/** POST /jobs whose body's last bytes arrive `delayMs` after the first ones; resolves with the status. */
function slowJobRequest(port: number, delayMs: number): Promise<{ status: number }> {
  const body = JSON.stringify({ capability: 'image.generate', prompt: 'in flight at shutdown', width: 64, height: 64 });
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    socket.on('data', (d) => {
      answer += d;
      const status = /^HTTP\/1\.1 (\d{3})/.exec(answer);
      if (status && answer.includes('\r\n\r\n')) {
        socket.destroy();
        resolve({ status: Number(status[1]) });
      }
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`closed; got ${JSON.stringify(answer)}`)));
    socket.write(
      `POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY_A}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`,
    );
    setTimeout(() => socket.write(body.slice(10)), delayMs);
  });
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function isAlive(pid: number): boolean {
  try {
    const state = /^State:\s+(\w)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return state !== 'Z';
  } catch {
    return false;
  }
}

function closedWithin(socket: net.Socket, ms: number): Promise<boolean> {
  return new Promise((r) => {
    const timer = setTimeout(() => r(false), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      r(true);
    });
  });
}
