// @backends sqlite,postgres
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { KEY_A, startStack, type Stack } from './helpers.ts';

/**
 * An early answer (413, 401, 400…) to a request whose body is still coming: the server keeps
 * reading and dropping the rest of the body, within a bound, before it closes, as nginx's
 * lingering close does. Closing at once would reset the connection under the client while it
 * still writes, and the client would see EPIPE/ECONNRESET instead of the answer.
 */

interface Exchange {
  status: number;
  /** The answer's head and body as read. */
  answer: string;
  /** The first error writing the rest of the body, if any. */
  writeError: string | null;
  /** How the connection ended: 'end' (the server closed cleanly) or the error. */
  closedBy: string;
}

/**
 * Sends the request head and `first` bytes of a body declared as `declared` bytes, waits for
 * the answer, then sends the rest of the body in 64 KiB writes and waits for the connection to
 * end. The answer is complete before the rest is sent: the test is deterministic.
 */
function earlyAnswer(port: number, head: string, declared: number, first: number, chunked = false): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    // Half-open allowed: the server's FIN after its answer must not end our writing (as in a real client, it is the server's reading that matters).
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let answer = '';
    let status = 0;
    let writeError: string | null = null;
    let restSent = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no end within 30 s; answer so far ${JSON.stringify(answer.slice(0, 300))}`));
    }, 30_000);
    const piece = Buffer.alloc(64 * 1024, 'x');
    const frame = (b: Buffer) => (chunked ? Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')]) : b);
    let restDone: Promise<void> = Promise.resolve();
    const sendRest = async () => {
      restSent = true;
      let left = declared - first;
      try {
        while (left > 0) {
          const b = piece.subarray(0, Math.min(left, piece.length));
          left -= b.length;
          const flushed = socket.write(frame(b));
          if (!flushed) {
            await new Promise<void>((r, j) => {
              socket.once('drain', r);
              socket.once('close', () => j(new Error('closed while writing')));
            });
          }
        }
        if (chunked) socket.write('0\r\n\r\n');
      } catch (error) {
        writeError ??= (error as Error).message;
      }
    };
    socket.on('data', (chunk) => {
      answer += chunk.toString('latin1');
      const end = answer.indexOf('\r\n\r\n');
      if (status === 0 && end > 0) {
        const length = Number(/content-length: (\d+)/i.exec(answer)?.[1] ?? 0);
        if (answer.length >= end + 4 + length) {
          status = Number(answer.split(' ')[1]);
          restDone = sendRest();
        }
      }
    });
    socket.on('error', (error) => {
      if (restSent) writeError ??= (error as NodeJS.ErrnoException).code ?? error.message;
      finish(`error ${(error as NodeJS.ErrnoException).code}`);
    });
    socket.on('end', () => finish('end'));
    let done = false;
    function finish(closedBy: string) {
      if (done) return;
      done = true;
      if (!restSent) {
        clearTimeout(timer);
        socket.destroy();
        return reject(new Error(`closed (${closedBy}) before a complete answer: ${JSON.stringify(answer.slice(0, 300))}`));
      }
      // The server half-closed (or reset): we finish sending, then see whether it read it all.
      void restDone.then(() => {
        socket.end();
        const closed = () => {
          clearTimeout(timer);
          resolve({ status, answer, writeError, closedBy });
        };
        if (socket.closed) closed();
        else socket.once('close', closed);
      });
    }
    socket.write(head);
    socket.write(frame(Buffer.alloc(first, '{')));
  });
}

const auth = `Authorization: Bearer ${KEY_A}\r\n`;
const head = (target: string, type: string, length: number | 'chunked', withAuth = true) =>
  `POST ${target} HTTP/1.1\r\nHost: x\r\n${withAuth ? auth : ''}Content-Type: ${type}\r\n${length === 'chunked' ? 'Transfer-Encoding: chunked' : `Content-Length: ${length}`}\r\n\r\n`;

describe('lingering close after an early answer', () => {
  let stack: Stack;
  let port: number;
  before(async () => {
    stack = await startStack({ worker: false, env: { ZHINIAN_MAX_UPLOAD_BYTES: String(1024 * 1024) } });
    port = Number(new URL(stack.url).port);
  });
  after(() => stack.stop());

  test('a JSON body declared at 5 MB: 413 after 64 KB, and the rest of the body is still read', async () => {
    for (const target of ['/api/v1/jobs', '/api/v1/assets']) {
      const res = await earlyAnswer(port, head(target, 'application/json', 5_000_000), 5_000_000, 64 * 1024);
      assert.equal(res.status, 413, res.answer.slice(0, 300));
      assert.match(res.answer, /"code":"too_large"/);
      assert.match(res.answer, /connection: close/i);
      assert.equal(res.writeError, null, `${target}: the server stopped reading: ${res.writeError}`);
      assert.equal(res.closedBy, 'end');
    }
  });

  test('a chunked JSON body over the limit: 413, the rest read', async () => {
    const res = await earlyAnswer(port, head('/api/v1/jobs', 'application/json', 'chunked'), 5_000_000, 2 * 1024 * 1024, true);
    assert.equal(res.status, 413, res.answer.slice(0, 300));
    assert.equal(res.writeError, null, `the server stopped reading: ${res.writeError}`);
    assert.equal(res.closedBy, 'end');
  });

  test('an upload over ZHINIAN_MAX_UPLOAD_BYTES: 413, the rest read', async () => {
    const boundary = 'b0undary';
    const partHead = `--${boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n`;
    const declared = 5_000_000;
    // The part's head, then 2 MB of the file (over the 1 MiB limit) before the answer; the rest after it.
    const res = await earlyAnswer(port, head('/api/v1/assets', `multipart/form-data; boundary=${boundary}`, declared) + partHead, declared - partHead.length, 2 * 1024 * 1024);
    assert.equal(res.status, 413, res.answer.slice(0, 300));
    assert.equal(res.writeError, null, `the server stopped reading: ${res.writeError}`);
    assert.equal(res.closedBy, 'end');
  });

  test('a refusal before the body is read (no key, console CSRF) keeps reading too', async () => {
    const noKey = await earlyAnswer(port, head('/api/v1/jobs', 'application/json', 3_000_000, false), 3_000_000, 64 * 1024);
    assert.equal(noKey.status, 401, noKey.answer.slice(0, 300));
    assert.equal(noKey.writeError, null);
    const console = await earlyAnswer(port, head('/admin/api/clients', 'application/json', 3_000_000, false), 3_000_000, 64 * 1024);
    assert.ok(console.status >= 400 && console.status < 500, console.answer.slice(0, 300));
    assert.equal(console.writeError, null);
  });

  test('the discarding is bounded: past the size bound the connection is closed', async () => {
    const declared = 200 * 1024 * 1024;
    const res = await earlyAnswer(port, head('/api/v1/jobs', 'application/json', declared), declared, 64 * 1024);
    assert.equal(res.status, 413);
    assert.notEqual(res.writeError, null, 'the server read 200 MB it had refused');
  });

  test('Node fetch of a 5 MB JSON body gets its 413, every time', async () => {
    const body = JSON.stringify({ capability: 'image.generate', prompt: 'x'.repeat(5 * 1024 * 1024) });
    let failures = 0;
    const errors: string[] = [];
    for (let i = 0; i < 25; i++) {
      try {
        const res = await fetch(`${stack.url}/api/v1/jobs`, { method: 'POST', headers: { authorization: `Bearer ${KEY_A}`, 'content-type': 'application/json' }, body });
        assert.equal(res.status, 413);
        assert.equal((await res.json()).code, 'too_large');
      } catch (error) {
        failures++;
        errors.push(String((error as Error).cause ?? error));
      }
    }
    assert.equal(failures, 0, `${failures}/25 failed: ${errors.slice(0, 3).join('; ')}`);
  });
});
