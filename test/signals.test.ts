// @backends sqlite,postgres
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { callApi, cleanup, KEY_A, killAndWait, listeningUrl, openTestDb, spawnZhinian, tempDir, testEnv, waitFor } from './helpers.ts';

/**
 * Ctrl-C on `npm start`: the terminal sends SIGINT to the whole process group and npm forwards
 * its own copy to the node process, so two arrive within milliseconds. They are one request to
 * stop: the job in flight is handed back (its attempt not counted) and the process exits 0.
 */
test('two SIGINTs in quick succession shut down once: the running job is handed back, exit 0', async (t) => {
  const add = cleanup(t);
  const dataDir = tempDir();
  // A stalled client keeps the server's part of the shutdown busy for the grace period, so the
  // second signal arrives while the job is still running (the worker stops after the server).
  const child = add(spawnZhinian('start', testEnv(dataDir, { LOG_LEVEL: 'info', ZHINIAN_SHUTDOWN_GRACE_SECONDS: '3' })), (c) => killAndWait(c));
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  const base = await listeningUrl(child);
  const created = await callApi(base, '/api/v1/jobs', {
    method: 'POST',
    json: { capability: 'video.generate', prompt: 'long', settings: { duration: 15, resolution: '1080p' } },
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.job.id;
  await waitFor(async () => (await callApi(base, `/api/v1/jobs/${id}`)).body.job.status === 'running', { what: 'the job to start', timeoutMs: 30_000 });

  add(await stalledRequest(Number(new URL(base).port)), async (s) => s.destroy());

  // Two separate deliveries (one signal sent twice at once may be merged by the kernel).
  child.kill('SIGINT');
  await waitFor(() => child.output().includes('shutting down'), { what: 'the shutdown to begin' });
  child.kill('SIGINT');
  const { code, signal } = await exited;
  assert.equal(signal, null, child.output().slice(-2000));
  assert.equal(code, 0, child.output().slice(-2000));
  assert.match(child.output(), /repeated signal: already shutting down/);

  const handle = await openTestDb(dataDir);
  try {
    const row = await handle.db.selectFrom('jobs').select(['status', 'lease_owner', 'attempts']).where('id', '=', id).executeTakeFirstOrThrow();
    assert.equal(row.lease_owner, null, 'the running job was handed back to the queue');
    assert.equal(row.attempts, 0, 'the handed-back attempt is not counted');
  } finally {
    await handle.close();
  }
});

test('a second signal well after the first still forces the exit', async (t) => {
  const add = cleanup(t);
  const dataDir = tempDir();
  // A long grace period and a stalled client: the first signal's shutdown would take 60 s.
  const child = add(spawnZhinian('server', testEnv(dataDir, { LOG_LEVEL: 'info', ZHINIAN_SHUTDOWN_GRACE_SECONDS: '60' })), (c) => killAndWait(c));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const port = Number(new URL(await listeningUrl(child)).port);
  add(await stalledRequest(port), async (s) => s.destroy());

  child.kill('SIGINT');
  await waitFor(() => child.output().includes('shutting down'), { what: 'the shutdown to begin' });
  // Past the window in which a second signal counts as a copy of the first.
  await new Promise((r) => setTimeout(r, 2_000));
  assert.equal(child.exitCode, null, `still waiting for the stalled request: ${child.output().slice(-2000)}`);
  child.kill('SIGINT');
  const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 20_000))]);
  assert.equal(code, 1, child.output().slice(-2000));
  assert.match(child.output(), /second signal: exiting/);
});

/**
 * A request that sent half its body and then nothing: only the grace period ends it. It asks for
 * `100 Continue` and sends the body only once the server answered it, so the server has parsed
 * the request before the test signals (a signal before that finds an idle connection, closed at once).
 */
async function stalledRequest(port: number): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  const continued = new Promise<void>((resolve) => {
    let seen = '';
    socket.on('data', (chunk) => {
      seen += chunk.toString('latin1');
      if (seen.includes('100 Continue')) resolve();
    });
  });
  socket.write(`POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY_A}\r\nContent-Type: application/json\r\nContent-Length: 500\r\nExpect: 100-continue\r\n\r\n`);
  await continued;
  socket.write('{"capability":');
  return socket;
}
