import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';

/** After an early answer, at most this much more of the request body is read and dropped… */
const LINGER_MAX_BYTES = 32 * 1024 * 1024;
/** …for at most this long; then the connection is closed whatever is still coming. */
const LINGER_MAX_MS = 5_000;

/**
 * Lingering close, as nginx does it. An answer sent before the request body has fully arrived
 * (413 for a body over a limit, 401 before the body is read, a 400 from a parser, a multipart
 * upload refused mid-file) closes the connection — the client must not send another request
 * on it — but not at once: closing a socket that still has unread data resets it, and a client
 * still writing its body then sees EPIPE/ECONNRESET, often before it has read our answer. So
 * once the answer is written we half-close (FIN), read and drop whatever the client still sends
 * (never buffering it), and close when the body has ended, or after LINGER_MAX_BYTES or
 * LINGER_MAX_MS, whichever comes first.
 *
 * One hook for every route and every body parser (Fastify's JSON limit, multipart uploads over
 * ZHINIAN_MAX_UPLOAD_BYTES, the console's forms): the condition is the same everywhere — the
 * answer is ready and the request is not complete.
 */
export function registerLingeringClose(app: FastifyInstance): void {
  app.addHook('onSend', async (request, reply, payload) => {
    if (!request.raw.complete) {
      reply.header('connection', 'close');
      lingerBeforeClose(request.raw);
    }
    return payload;
  });
}

type ClosingSocket = Socket & { destroySoon(): void };

/**
 * From the answer on, the rest of the body is read and dropped here (a listener that counts,
 * in flowing mode: Node's own discarding of an unread body could not be counted or bounded).
 * Node closes a `Connection: close` answer's socket with `destroySoon()` once the answer is
 * written; this socket's instead half-closes and waits for the body's end, within the bounds.
 */
function lingerBeforeClose(request: IncomingMessage): void {
  const socket = request.socket as ClosingSocket;
  let dropped = 0;
  let answered = false;
  const count = (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > LINGER_MAX_BYTES) cutOff();
  };
  const cutOff = () => {
    clearTimeout(timer);
    socket.destroy();
  };
  const closeCleanly = () => {
    clearTimeout(timer);
    // Everything read: closing now sends a FIN, after our answer (flushed first).
    if (socket.writableFinished) socket.destroy();
    else socket.once('finish', () => socket.destroy());
  };
  const timer = setTimeout(cutOff, LINGER_MAX_MS);
  socket.once('close', () => clearTimeout(timer));
  request.on('data', count);
  request.once('end', () => {
    request.off('data', count);
    if (answered) closeCleanly();
  });
  request.resume();
  socket.destroySoon = () => {
    answered = true;
    if (request.readableEnded) return closeCleanly();
    // Our FIN follows the answer: the client knows nothing more is coming, and may finish writing.
    socket.end();
  };
}
