import net from 'node:net';

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  text: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: any;
  /** Milliseconds from the first byte written to the end of the answer. */
  ms: number;
}

/**
 * Sends bytes exactly as given over a TCP connection (no client-side normalisation of the path,
 * the method or the framing) and reads one HTTP/1.1 answer. Rejects if no complete answer comes
 * within `timeoutMs`. `keepOpen` leaves the connection open after writing, as a client waiting
 * for its answer does; `then` runs after the first write (to stall or hang up mid-request).
 */
export function rawRequest(port: number, data: string | Buffer, opts: { timeoutMs?: number; then?: (socket: net.Socket) => void } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = net.connect(port, '127.0.0.1');
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete answer within ${opts.timeoutMs ?? 10_000} ms; got ${JSON.stringify(received.toString('latin1').slice(0, 300))}`));
    }, opts.timeoutMs ?? 10_000);
    const head = (typeof data === 'string' ? data : data.toString('latin1', 0, 5)).startsWith('HEAD ');
    const finish = () => {
      const parsed = parseResponse(received, head);
      if (!parsed) return false;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...parsed, ms: Date.now() - started });
      return true;
    };
    socket.on('data', (chunk) => {
      received = Buffer.concat([received, chunk]);
      finish();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      if (!finish()) {
        clearTimeout(timer);
        reject(new Error(`connection closed without a complete answer; got ${JSON.stringify(received.toString('latin1').slice(0, 300))}`));
      }
    });
    socket.write(data, () => opts.then?.(socket));
  });
}

function parseResponse(buf: Buffer, head: boolean): Omit<RawResponse, 'ms'> | null {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const [statusLine, ...lines] = buf.subarray(0, end).toString('latin1').split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  // Answers that never have a body (RFC 9112 §6.3).
  if (head || /^HTTP\/1\.[01] (1\d\d|204|304) /.test(statusLine)) return withBody(statusLine, headers, '');
  const length = Number(headers['content-length'] ?? 0);
  if (headers['transfer-encoding'] === 'chunked') {
    const body = buf.subarray(end + 4).toString('utf8');
    if (!body.endsWith('0\r\n\r\n')) return null;
    return withBody(statusLine, headers, dechunk(body));
  }
  if (buf.length < end + 4 + length) return null;
  return withBody(statusLine, headers, buf.subarray(end + 4, end + 4 + length).toString('utf8'));
}

function withBody(statusLine: string, headers: Record<string, string>, text: string): Omit<RawResponse, 'ms'> {
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: Number(statusLine.split(' ')[1]), headers, text, json };
}

function dechunk(body: string): string {
  let out = '';
  let rest = body;
  for (;;) {
    const nl = rest.indexOf('\r\n');
    const size = parseInt(rest.slice(0, nl), 16);
    if (!size) return out;
    out += rest.slice(nl + 2, nl + 2 + size);
    rest = rest.slice(nl + 2 + size + 2);
  }
}

/** A request with the given request line, headers and body, framed by Content-Length unless the headers frame it. */
export function httpRequest(method: string, target: string, headers: Record<string, string> = {}, body = ''): string {
  const all: Record<string, string> = { host: 'zhinian.test', ...headers };
  if (body !== '' && !Object.keys(all).some((h) => /^(content-length|transfer-encoding)$/i.test(h))) all['content-length'] = String(Buffer.byteLength(body));
  return `${method} ${target} HTTP/1.1\r\n${Object.entries(all)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n${body}`;
}
