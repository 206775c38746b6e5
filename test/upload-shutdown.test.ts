// @backends sqlite,postgres
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { cleanup, KEY_A, killAndWait, listeningUrl, spawnZhinian, tempDir, testEnv, waitFor } from './helpers.ts';

/**
 * An upload still arriving when the server stops: a real process, a real upload sent halfway.
 * SIGTERM: past the grace period the upload is cut off, its temp file removed before the
 * process exits, and the log says shutdown. SIGKILL: the temp file stays, and the next start
 * on the data dir removes it (its writer, a process of this host, is gone).
 */

const BOUNDARY = 'upload-boundary';

/** Sends the head of a 5 MB upload and its first 1 MB, then stalls. */
function halfUpload(port: number): net.Socket {
  const part = `--${BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n`;
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  socket.write(
    `POST /api/v1/assets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY_A}\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: ${5_000_000}\r\n\r\n${part}`,
  );
  socket.write(Buffer.alloc(1024 * 1024, 7));
  return socket;
}

/** Files in the data dir's temp folder (not the workers' work dirs). */
function tempFiles(dataDir: string): { name: string; bytes: number }[] {
  const dir = path.join(dataDir, 'tmp');
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => ({ name: e.name, bytes: fs.statSync(path.join(dir, e.name)).size }));
}

test('SIGTERM during an upload: the temp file is removed before exit, and the log says shutdown', async (t) => {
  const add = cleanup(t);
  const dataDir = tempDir();
  const server = add(spawnZhinian('server', testEnv(dataDir, { LOG_LEVEL: 'info', ZHINIAN_SHUTDOWN_GRACE_SECONDS: '1' })), (c) => killAndWait(c));
  const exited = new Promise<number | null>((r) => server.once('exit', (code) => r(code)));
  const port = Number(new URL(await listeningUrl(server)).port);
  const upload = add(halfUpload(port), async (s) => s.destroy());
  await waitFor(() => tempFiles(dataDir).some((f) => f.bytes > 0), { what: 'the upload to be written to a temp file' });

  server.kill('SIGTERM');
  assert.equal(await exited, 0, server.output().slice(-2000));
  assert.deepEqual(tempFiles(dataDir), [], 'the cut-off upload left its temp file');
  assert.match(server.output(), /request cut off by shutdown/);
  assert.doesNotMatch(server.output(), /aborted by the client/);
  upload.destroy();
});

test('SIGKILL during an upload: the next start removes the temp file it left', async (t) => {
  const add = cleanup(t);
  const dataDir = tempDir();
  const env = testEnv(dataDir);
  const first = add(spawnZhinian('server', env), (c) => killAndWait(c));
  const port = Number(new URL(await listeningUrl(first)).port);
  add(halfUpload(port), async (s) => s.destroy());
  await waitFor(() => tempFiles(dataDir).some((f) => f.bytes > 0), { what: 'the upload to be written to a temp file' });
  await killAndWait(first, 'SIGKILL');
  const left = tempFiles(dataDir);
  assert.equal(left.length, 1, 'the killed process left its temp file');

  // Another process's file on this host, still running (this test's): kept.
  const live = path.join(dataDir, 'tmp', `${left[0]!.name.split('~')[0]}~${process.pid}~00000000~${Date.now()}-live`);
  fs.writeFileSync(live, 'in use');
  const second = add(spawnZhinian('server', env), (c) => killAndWait(c));
  await listeningUrl(second);
  assert.deepEqual(
    tempFiles(dataDir).map((f) => f.name),
    [path.basename(live)],
  );
});
