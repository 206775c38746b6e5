// @backends sqlite,postgres
/**
 * Property-based fuzzing of every endpoint (fast-check). Every answer, whatever was sent, must:
 *  - never be a 5xx;
 *  - if not 2xx (and not 304), be JSON `{ error: <non-empty string>, code: <snake_case> }` with no
 *    stack trace and without the raw request path echoed back;
 *  - come within REQUEST_DEADLINE_MS (a hang is a failure);
 *  - if 2xx, have the documented shape;
 *  - and a request without a valid key never gets a 2xx from anything but the public endpoints.
 *
 * Requests go over raw `net` sockets to 127.0.0.1, so neither fetch nor node's http client
 * normalises methods, targets or header bytes. The only URLs handed to the service point at
 * loopback (a file server of this file, or port 1) or at the reserved `.invalid` TLD.
 *
 * Replay a failure: FUZZ_SEED=<seed printed by the test> npm test -- test/fuzz.test.ts
 * Fuzz longer: FUZZ_SCALE=10 multiplies every property's runs and time budget.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, test, type TestContext } from 'node:test';
import fc from 'fast-check';
import { KEY_A, KEY_B, startFileServer, startStack, TEST_BACKEND, type Stack } from './helpers.ts';

const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
const SCALE = Math.max(0.1, Number(process.env.FUZZ_SCALE ?? 1));
const REQUEST_DEADLINE_MS = 10_000;
/** FUZZ_LOG=1 prints every request and answer. */
const LOG = process.env.FUZZ_LOG === '1';
/**
 * FUZZ_SURVEY=1: a failing run does not stop its property; every distinct failure (rule, status,
 * code) is counted and one example of each printed at the end. For finding all failure classes
 * in one go; the properties then pass, so never set it in CI.
 */
const SURVEY = process.env.FUZZ_SURVEY === '1';

const CAPABILITIES = ['image.generate', 'image.inpaint', 'image.upscale', 'video.generate'] as const;
const JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'expired', 'cancelled'];
const ASSET_KINDS = ['image', 'video', 'audio', 'mask', 'file'];
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const ERROR_CODE = /^[a-z][a-z0-9_]*$/;
const PUBLIC_PATHS = new Set(['/api/v1/openapi.json', '/healthz', '/readyz']);

/** A 1×1 PNG. */
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');
const TEXT = Buffer.from('智念 fuzz text asset\n'.repeat(20), 'utf8');

// ---------------------------------------------------------------------------------------------
// Raw HTTP over a socket

type HeaderValue = string | Buffer | Uint8Array;
interface RawRequest {
  method: string;
  /** The request target exactly as sent (a string is sent as its UTF-8 bytes). */
  target: string;
  headers?: [string, HeaderValue][];
  body?: Buffer | string;
  /** Whether the request carries a valid API key: `false` makes any non-public 2xx a failure. */
  validKey: boolean | 'unknown';
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  text: string;
  json: any;
  isJson: boolean;
  ms: number;
}

let port = 0;
let requestCount = 0;

function bytesOf(v: HeaderValue): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v);
}

function encodeRequest(req: RawRequest): Buffer {
  const body = req.body === undefined ? undefined : Buffer.isBuffer(req.body) ? req.body : Buffer.from(req.body, 'utf8');
  const crlf = Buffer.from('\r\n');
  const pieces: Buffer[] = [Buffer.from(`${req.method} `, 'latin1'), Buffer.from(req.target, 'utf8'), Buffer.from(` HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n`)];
  for (const [name, value] of req.headers ?? []) pieces.push(Buffer.from(`${name}: `, 'latin1'), bytesOf(value), crlf);
  if (body !== undefined) pieces.push(Buffer.from(`Content-Length: ${body.length}\r\n`));
  pieces.push(Buffer.from('Connection: close\r\n\r\n'));
  if (body !== undefined) pieces.push(body);
  return Buffer.concat(pieces);
}

function dechunk(body: Buffer): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = body.indexOf('\r\n', at);
    if (eol < 0) throw new Error('bad chunked encoding in the answer');
    const size = parseInt(body.subarray(at, eol).toString('latin1'), 16);
    if (!Number.isFinite(size)) throw new Error('bad chunk size in the answer');
    if (size === 0) return Buffer.concat(out);
    out.push(body.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

/** Sends one request on a fresh connection and reads the answer until the server closes. */
function send(req: RawRequest): Promise<Answer> {
  requestCount++;
  const started = Date.now();
  const wire = encodeRequest(req);
  return new Promise<Answer>((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    let socketError: Error | null = null;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${REQUEST_DEADLINE_MS} ms (hang)\n  request: ${showRequest(req)}`));
    }, REQUEST_DEADLINE_MS);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (e) => (socketError = e));
    socket.on('close', () => {
      clearTimeout(timer);
      const raw = Buffer.concat(chunks);
      if (raw.length === 0) {
        return reject(new Error(`connection closed without an answer${socketError ? ` (${socketError.message})` : ''}\n  request: ${showRequest(req)}`));
      }
      try {
        resolve(parseAnswer(raw, req.method, Date.now() - started));
      } catch (error) {
        reject(new Error(`${(error as Error).message}\n  request: ${showRequest(req)}\n  raw answer: ${clip(raw.toString('latin1'), 300)}`));
      }
    });
    // Written, not ended: a client that half-closes may lose its answer, and real clients do not.
    socket.write(wire);
  });
}

function parseAnswer(raw: Buffer, method: string, ms: number): Answer {
  const split = raw.indexOf('\r\n\r\n');
  if (split < 0) throw new Error('answer has no end of headers');
  const lines = raw.subarray(0, split).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0]);
  if (!m) throw new Error(`not an HTTP status line: ${JSON.stringify(lines[0])}`);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  let body = raw.subarray(split + 4);
  if (method !== 'HEAD' && /chunked/i.test(headers['transfer-encoding'] ?? '')) body = dechunk(body);
  const text = body.toString('utf8');
  let json: unknown;
  let isJson = false;
  if (text.length > 0) {
    try {
      json = JSON.parse(text);
      isJson = true;
    } catch {
      // not JSON
    }
  }
  return { status: Number(m[1]), headers, body, text, json, isJson, ms };
}

function clip(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, n)}…(${s.length} chars)`;
}

function showValue(v: HeaderValue): string {
  if (typeof v === 'string') return JSON.stringify(clip(v, 120));
  const b = Buffer.from(v);
  return /^[\x20-\x7e]*$/.test(b.toString('latin1')) ? JSON.stringify(clip(b.toString('latin1'), 120)) : `<bytes ${clip(b.toString('hex'), 120)}>`;
}

function showRequest(req: RawRequest): string {
  const headers = (req.headers ?? []).map(([n, v]) => `${n}: ${showValue(v)}`).join(' | ');
  const body = req.body === undefined ? '' : ` body=${JSON.stringify(clip(Buffer.isBuffer(req.body) ? req.body.toString('latin1') : req.body, 300))}`;
  return `${JSON.stringify(req.method)} ${JSON.stringify(clip(req.target, 200))}${headers ? ` [${headers}]` : ''}${body}`;
}

function showAnswer(res: Answer): string {
  return `${res.status} ${res.headers['content-type'] ?? '(no content-type)'} ${clip(res.text, 400)}`;
}

class FuzzFailure extends Error {
  constructor(
    readonly rule: string,
    readonly example: string,
    readonly answerKey: string,
  ) {
    super(`${rule}\n${example}`);
  }
}

/** Per distinct failure: how often, and the shortest example for each endpoint it happened on. */
const survey = new Map<string, { count: number; examples: Map<string, string> }>();

function endpointOf(example: string): string {
  const m = /request: ("[^"]*") "([^"]*)"/.exec(example);
  if (!m) return '?';
  return `${m[1]} ${routedPath(m[2])
    .replace(/(job|asset)_[0-9a-z]{26}/g, ':id')
    .split('/')
    .slice(0, 5)
    .join('/')
    .slice(0, 40)}`;
}

/** End of the running property's time budget; runs (and shrink steps) after it pass at once. */
let budgetEnd = Infinity;
let runsPastBudget = 0;

/**
 * Wraps a property's predicate. Past the time budget a run passes without sending anything (so
 * shrinking stops with the smallest failure found so far); a run in progress is never cut short,
 * so a hang still fails. In survey mode a failure is recorded, not thrown.
 */
const fuzz: typeof fc.asyncProperty = ((...args: any[]) => {
  const predicate = args.pop() as (...a: unknown[]) => Promise<void>;
  return (fc.asyncProperty as (...a: unknown[]) => unknown)(...args, async (...values: unknown[]) => {
    if (Date.now() > budgetEnd) {
      runsPastBudget++;
      return;
    }
    try {
      await predicate(...values);
    } catch (error) {
      if (!SURVEY) throw error;
      const key = error instanceof FuzzFailure ? `${error.rule} | ${error.answerKey}` : `exception | ${String((error as Error).message).split('\n')[0]}`;
      const example = error instanceof FuzzFailure ? error.example : String((error as Error).message);
      const entry = survey.get(key) ?? { count: 0, examples: new Map<string, string>() };
      entry.count++;
      const where = endpointOf(example);
      const kept = entry.examples.get(where);
      if ((kept === undefined && entry.examples.size < 6) || (kept !== undefined && example.length < kept.length)) entry.examples.set(where, example);
      survey.set(key, entry);
    }
  });
}) as any;

function check(cond: unknown, what: string, req: RawRequest, res: Answer): asserts cond {
  if (!cond) {
    const code = res.isJson && res.json && typeof res.json === 'object' ? res.json.code : undefined;
    throw new FuzzFailure(what, `  request: ${showRequest(req)}\n  answer:  ${showAnswer(res)}\n  backend: ${TEST_BACKEND}`, `${res.status} ${JSON.stringify(code) ?? '-'}`);
  }
}

/** The path part of a target (absolute-form reduced to its path), as sent. */
function rawPathOf(target: string): string {
  let t = target;
  const abs = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(t);
  if (abs) t = t.slice(abs[0].length) || '/';
  return t.split(/[?#]/, 1)[0];
}

function decodedOrNull(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

/** Where a lenient router might send the target: path decoded, trailing slash dropped. */
function routedPath(target: string): string {
  const p = rawPathOf(target);
  const d = decodedOrNull(p) ?? p;
  return d.length > 1 ? d.replace(/\/+$/, '') : d;
}

/** The OpenAPI document or a health/readiness answer: what a request without a key may get. */
function isPublicAnswer(req: RawRequest, res: Answer): boolean {
  if (res.isJson && res.json && typeof res.json === 'object' && !Array.isArray(res.json)) {
    const b = res.json;
    if (typeof b.openapi === 'string' && b.paths && typeof b.paths === 'object') return true;
    if (b.status === 'ok' && Object.keys(b).every((k) => ['status', 'database', 'storage'].includes(k))) return true;
    return false;
  }
  // No body (HEAD): judge by where the target could have been routed.
  return PUBLIC_PATHS.has(routedPath(req.target));
}

/**
 * Sends a request and applies the rules every answer must follow. `shape` checks a 2xx body
 * against the documented one for that endpoint.
 */
async function call(req: RawRequest, shape?: (res: Answer) => void): Promise<Answer> {
  const res = await send(req);
  if (LOG) console.error(`# ${showRequest(req)}\n#   → ${showAnswer(res)}`);
  check(res.status < 500, `5xx answer`, req, res);
  const ok = res.status >= 200 && res.status < 300;
  // The console's pages send a browser without a session to sign in: an empty redirect, not an error.
  const toSignIn = res.status === 302 && res.headers.location === '/admin/auth/login' && res.body.length === 0;
  if (!ok && res.status !== 304 && !toSignIn && req.method !== 'HEAD') {
    check(res.isJson, 'error answer is not JSON', req, res);
    const b = res.json;
    check(b !== null && typeof b === 'object' && !Array.isArray(b), 'error answer is not a JSON object', req, res);
    check(typeof b.error === 'string' && b.error.length > 0, 'error answer has no non-empty "error" string', req, res);
    check(typeof b.code === 'string' && ERROR_CODE.test(b.code), `error answer "code" is not snake_case (${JSON.stringify(b.code)})`, req, res);
    check(!('stack' in b), 'error answer has a "stack" field', req, res);
    check(!/\.(?:ts|js|mjs|cjs):\d+/.test(res.text) && !res.text.includes('    at '), 'error answer carries a stack trace', req, res);
    const rawPath = rawPathOf(req.target);
    if (rawPath.length >= 6) {
      const decoded = decodedOrNull(rawPath);
      const echoed = [rawPath, decoded].some((p) => p !== null && p.length >= 6 && (res.text.includes(p) || String(b.error).includes(p)));
      check(!echoed, 'error answer echoes the request path', req, res);
    }
  }
  if (ok && req.validKey === false) check(isPublicAnswer(req, res), 'a request without a valid API key got a 2xx', req, res);
  if (ok && shape && req.method !== 'HEAD') {
    check(res.isJson || res.headers['content-type']?.startsWith('application/json') !== true, '2xx JSON answer does not parse', req, res);
    try {
      shape(res);
    } catch (error) {
      if (error instanceof FuzzFailure) throw error;
      check(false, `2xx answer has the wrong shape: ${(error as Error).message}`, req, res);
    }
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// Documented 2xx shapes

function assertJob(job: any) {
  assert.ok(job && typeof job === 'object', 'job is an object');
  assert.match(String(job.id), /^job_[0-9A-Za-z_-]+$/, 'job.id');
  assert.ok((CAPABILITIES as readonly string[]).includes(job.capability), `job.capability ${job.capability}`);
  assert.ok(JOB_STATUSES.includes(job.status), `job.status ${job.status}`);
  assert.ok(Array.isArray(job.inputAssetIds), 'job.inputAssetIds');
  assert.ok(Array.isArray(job.outputAssetIds), 'job.outputAssetIds');
  assert.ok(job.params && typeof job.params === 'object', 'job.params');
  assert.match(String(job.createdAt), ISO_MS, 'job.createdAt');
  assert.match(String(job.updatedAt), ISO_MS, 'job.updatedAt');
}

function assertAsset(asset: any) {
  assert.ok(asset && typeof asset === 'object', 'asset is an object');
  assert.match(String(asset.id), /^asset_[0-9A-Za-z_-]+$/, 'asset.id');
  assert.ok(ASSET_KINDS.includes(asset.kind), `asset.kind ${asset.kind}`);
  assert.ok(Number.isInteger(asset.bytes) && asset.bytes >= 0, 'asset.bytes');
  assert.match(String(asset.sha256), /^[0-9a-f]{64}$/, 'asset.sha256');
  assert.ok(['upload', 'url', 'output'].includes(asset.source), `asset.source ${asset.source}`);
  assert.equal(typeof asset.name, 'string', 'asset.name');
  assert.equal(typeof asset.mimeType, 'string', 'asset.mimeType');
  assert.equal(typeof asset.downloadUrl, 'string', 'asset.downloadUrl');
  assert.match(String(asset.createdAt), ISO_MS, 'asset.createdAt');
}

const shapes = {
  job: (res: Answer) => assertJob(res.json?.job),
  jobList: (res: Answer) => {
    assert.ok(Array.isArray(res.json?.jobs), 'jobs is an array');
    res.json.jobs.forEach(assertJob);
    assert.ok(res.json.nextBefore === null || typeof res.json.nextBefore === 'string', 'nextBefore');
  },
  asset: (res: Answer) => assertAsset(res.json?.asset),
  assetList: (res: Answer) => {
    assert.ok(Array.isArray(res.json?.assets), 'assets is an array');
    res.json.assets.forEach(assertAsset);
    assert.ok(res.json.nextBefore === null || typeof res.json.nextBefore === 'string', 'nextBefore');
  },
  uploaded: (res: Answer) => {
    assert.equal(res.status, 201, 'upload answers 201');
    assert.ok(Array.isArray(res.json?.assets) && res.json.assets.length > 0, 'assets is a non-empty array');
    res.json.assets.forEach(assertAsset);
  },
  registered: (res: Answer) => {
    assert.equal(res.status, 201, 'URL registration answers 201');
    assertAsset(res.json?.asset);
  },
  capabilities: (res: Answer) => {
    const caps = res.json?.capabilities;
    assert.ok(Array.isArray(caps), 'capabilities is an array');
    assert.deepEqual(caps.map((c: any) => c.capability).sort(), [...CAPABILITIES].sort());
    for (const c of caps) {
      assert.equal(typeof c.description, 'string');
      assert.ok(Array.isArray(c.engines));
      assert.ok(c.params && typeof c.params === 'object');
    }
  },
  openapi: (res: Answer) => {
    assert.match(String(res.json?.openapi), /^3\.1/, 'openapi 3.1');
    assert.ok(res.json.paths && typeof res.json.paths === 'object', 'paths');
  },
  health: (res: Answer) => assert.equal(res.json?.status, 'ok'),
  created: (res: Answer) => {
    assert.ok(res.status === 200 || res.status === 201, `POST /jobs answers 200 or 201, not ${res.status}`);
    assertJob(res.json?.job);
    assert.equal(res.json.reused, res.status === 200, 'reused is true exactly for 200');
  },
};

// ---------------------------------------------------------------------------------------------
// Generated values: "recipes" that stay small when fast-check prints a counterexample and are
// turned into (possibly huge or deep) JSON text only when sent.

/** `{ $repeat, $times }`: a long string; `{ $deep, $depth }`: a deeply nested value; `{ $raw }`: JSON text verbatim. */
type Recipe =
  | null
  | boolean
  | number
  | string
  | Recipe[]
  | { [k: string]: Recipe }
  | { $repeat: string; $times: number }
  | { $deep: 'object' | 'array' | 'mixed'; $depth: number }
  | { $raw: string };

function isMarker(r: object, key: string): boolean {
  return Object.hasOwn(r, key);
}

/** JSON text of a recipe. Deep values are written iteratively, never by recursion. */
function jsonText(r: Recipe): string {
  if (r === null || typeof r !== 'object') return JSON.stringify(r) ?? 'null';
  if (Array.isArray(r)) return `[${r.map(jsonText).join(',')}]`;
  if (isMarker(r, '$repeat')) {
    const m = r as { $repeat: string; $times: number };
    return JSON.stringify(m.$repeat.repeat(m.$times));
  }
  if (isMarker(r, '$deep')) {
    const m = r as { $deep: string; $depth: number };
    const open: string[] = [];
    const close: string[] = [];
    for (let i = 0; i < m.$depth; i++) {
      const obj = m.$deep === 'object' || (m.$deep === 'mixed' && i % 2 === 0);
      open.push(obj ? '{"d":' : '[');
      close.push(obj ? '}' : ']');
    }
    return `${open.join('')}"\\u0000\\ud800 leaf"${close.reverse().join('')}`;
  }
  if (isMarker(r, '$raw')) return (r as { $raw: string }).$raw;
  return `{${Object.entries(r)
    .map(([k, v]) => `${JSON.stringify(k)}:${jsonText(v as Recipe)}`)
    .join(',')}}`;
}

/** Sets an own property, also for `__proto__`. */
function put(obj: Record<string, Recipe>, key: string, value: Recipe) {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

const SPECIALS = [
  '\u0000',
  'a\u0000b',
  '\ud800',
  '\udfff',
  '\udc00\ud800',
  '\u202e',
  '\u2066\u2069',
  '\u200f',
  '\ufeff',
  '😀',
  '👩‍👩‍👧',
  '𝒳',
  '智念',
  '\u0085',
  '\u2028',
  '"',
  '\\',
  '\n',
  '\r\n',
  '\t',
  '<script>alert(1)</script>',
  '%00',
  '%',
  '%zz',
  '../',
  '..\\',
  '${x}',
  "'; drop table jobs; --",
  '\u001b[31m',
  '\x7f',
  'é',
  ' ',
  '',
  '@图片1',
  '\u0301',
  'ﷺ',
  '\uffff',
  '\ufffe',
];

const weirdString: fc.Arbitrary<Recipe> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.array(fc.oneof(fc.constantFrom(...SPECIALS), fc.string({ maxLength: 6 }), fc.string({ unit: 'binary', maxLength: 4 })), { maxLength: 6 }).map((a) => a.join('')),
  },
  { weight: 1, arbitrary: fc.record({ $repeat: fc.constantFrom('x', '😀', '\u0000', '智', 'ab\ud800', '\u202e', ' '), $times: fc.integer({ min: 300, max: 20_000 }) }) },
);

/** URLs that are loopback (nothing listens on port 1) or under the reserved `.invalid` TLD, plus non-URLs. */
function safeUrl(fileBase: string): fc.Arbitrary<string> {
  const host = fc.constantFrom('127.0.0.1:1', '[::1]:1', 'zhinian-fuzz.invalid', 'a.b.invalid:8443', 'xn--fiq228c.invalid', '127.0.0.1:0');
  const path = fc.array(fc.oneof(fc.constantFrom('a.png', '..', '%00', '%2e%2e', '名.png', '@', '#x', '?q=1'), fc.webSegment()), { maxLength: 3 }).map((s) => `/${s.join('/')}`);
  return fc.oneof(
    { weight: 4, arbitrary: fc.tuple(fc.constantFrom('http', 'https', 'HTTP'), host, path).map(([s, h, p]) => `${s}://${h}${p}`) },
    { weight: 3, arbitrary: fc.constantFrom(`${fileBase}/img.png`, `${fileBase}/t.txt`, `${fileBase}/missing`) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        'ftp://127.0.0.1:1/x',
        'file:///etc/passwd',
        'javascript:alert(1)',
        'data:image/png;base64,iVBOR',
        'not a url',
        '',
        'http://',
        'http:///x',
        'http://127.0.0.1:1/\u0000',
        'http://[::1',
        'http://zhinian-fuzz.invalid:99999/',
        '//127.0.0.1:1/x',
        'http://127.0.0.1:1/' + 'p'.repeat(2100),
      ),
    },
  );
}

function anyValue(fileBase: string): fc.Arbitrary<Recipe> {
  const scalar: fc.Arbitrary<Recipe> = fc.oneof(
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.constantFrom(0, -1, 1, 63, 64, 1024, 8192, 8193, 3, 4, 5, 15, 16, 100, 101, 100.5, 4.5, 1e308, -0, 2 ** 53 + 1, -(2 ** 31)),
    fc.constantFrom('image.generate', 'image.upscale', '4k', '16k', 'adaptive', '9:16', '2:1', '720p', 'high', 'ultra', 'local', 'image', 'text', 'true', '1440'),
    weirdString,
    safeUrl(fileBase),
  );
  const small: fc.Arbitrary<Recipe> = fc.oneof(
    scalar,
    fc.array(scalar, { maxLength: 3 }),
    fc.dictionary(fc.oneof(fc.string({ maxLength: 5 }), fc.constantFrom('__proto__', 'constructor', 'type', 'url')), scalar, { maxKeys: 3 }),
  );
  return fc.oneof(
    { weight: 6, arbitrary: small },
    { weight: 1, arbitrary: fc.array(small, { minLength: 17, maxLength: 40 }) },
    { weight: 1, arbitrary: fc.record({ $deep: fc.constantFrom<'object' | 'array' | 'mixed'>('object', 'array', 'mixed'), $depth: fc.integer({ min: 1, max: 3000 }) }) },
    {
      weight: 1,
      arbitrary: fc.record({
        $raw: fc.constantFrom(
          '"\\u0000"',
          '"a\\u0000b"',
          '"\\ud800"',
          '"\\udfff\\ud800"',
          '1e999',
          '-1e999',
          '-0',
          '0.0000000000000000000001',
          '123456789012345678901234567890',
          '"\\u202e"',
        ),
      }),
    },
  );
}

// ---------------------------------------------------------------------------------------------
// The suite

interface World {
  stack: Stack;
  fileBase: string;
  pngAsset: any;
  textAsset: any;
  oddNameAsset: any;
  foreignAsset: any;
  queuedJob: any;
  foreignJob: any;
  content: Map<string, Buffer>;
}

function runs(n: number) {
  return Math.max(1, Math.round(n * SCALE));
}

/** Runs one property with a printed seed, a number of runs and a time budget (shrinking included). */
async function property<Ts extends [unknown, ...unknown[]]>(t: TestContext, prop: fc.IAsyncPropertyWithHooks<Ts>, opts: { numRuns: number; budgetMs: number }) {
  const before = requestCount;
  const started = Date.now();
  budgetEnd = started + opts.budgetMs * SCALE;
  runsPastBudget = 0;
  t.diagnostic(`fast-check seed ${SEED} (replay: FUZZ_SEED=${SEED}), numRuns ${runs(opts.numRuns)}, backend ${TEST_BACKEND}`);
  try {
    await fc.assert(prop, {
      seed: SEED,
      numRuns: runs(opts.numRuns),
      includeErrorInReport: true,
    });
  } finally {
    // Not fast-check's interruptAfterTimeLimit: it abandons the run in progress, hiding a hang.
    budgetEnd = Infinity;
    t.diagnostic(
      `${requestCount - before} requests in ${Date.now() - started} ms${runsPastBudget ? ` (${runsPastBudget} runs past the ${opts.budgetMs * SCALE} ms budget not sent)` : ''}`,
    );
  }
}

type AuthVariant = { headers: [string, HeaderValue][]; valid: boolean | 'unknown'; label: string };

const AUTH_VARIANTS: AuthVariant[] = [
  { label: 'bearer A', headers: [['Authorization', `Bearer ${KEY_A}`]], valid: true },
  { label: 'bearer B', headers: [['Authorization', `Bearer ${KEY_B}`]], valid: true },
  { label: 'x-key A', headers: [['X-Zhinian-Api-Key', KEY_A]], valid: true },
  { label: 'lower bearer', headers: [['authorization', `bearer ${KEY_A}`]], valid: 'unknown' },
  { label: 'spaced bearer', headers: [['Authorization', `Bearer    ${KEY_A}  `]], valid: 'unknown' },
  { label: 'x-key padded', headers: [['X-Zhinian-Api-Key', `  ${KEY_A}`]], valid: 'unknown' },
  {
    label: 'empty auth + x-key',
    headers: [
      ['Authorization', ''],
      ['X-Zhinian-Api-Key', KEY_A],
    ],
    valid: 'unknown',
  },
  {
    label: 'wrong bearer + x-key',
    headers: [
      ['Authorization', 'Bearer nope'],
      ['X-Zhinian-Api-Key', KEY_A],
    ],
    valid: 'unknown',
  },
  {
    label: 'two auth headers',
    headers: [
      ['Authorization', `Bearer ${KEY_A}`],
      ['Authorization', 'Bearer nope'],
    ],
    valid: 'unknown',
  },
  { label: 'none', headers: [], valid: false },
  { label: 'key plus x', headers: [['Authorization', `Bearer ${KEY_A}x`]], valid: false },
  { label: 'key minus one', headers: [['Authorization', `Bearer ${KEY_A.slice(0, -1)}`]], valid: false },
  { label: 'upper key', headers: [['Authorization', `Bearer ${KEY_A.toUpperCase()}`]], valid: false },
  { label: 'bare key', headers: [['Authorization', KEY_A]], valid: false },
  { label: 'basic', headers: [['Authorization', `Basic ${Buffer.from(`client-a:${KEY_A}`).toString('base64')}`]], valid: false },
  { label: 'token', headers: [['Authorization', `Token ${KEY_A}`]], valid: false },
  { label: 'bearer only', headers: [['Authorization', 'Bearer']], valid: false },
  { label: 'bearer space', headers: [['Authorization', 'Bearer ']], valid: false },
  { label: 'two keys', headers: [['Authorization', `Bearer ${KEY_A}, Bearer ${KEY_B}`]], valid: false },
  { label: 'bearer NUL', headers: [['Authorization', `Bearer ${KEY_A}\u0000`]], valid: false },
  { label: 'bearer latin1', headers: [['Authorization', Buffer.from(`Bearer ${KEY_A}\xe9`, 'latin1')]], valid: false },
  { label: 'bearer utf8', headers: [['Authorization', `Bearer 智念${KEY_A}`]], valid: false },
  { label: 'huge bearer', headers: [['Authorization', `Bearer ${'k'.repeat(12_000)}`]], valid: false },
  { label: 'x-key empty', headers: [['X-Zhinian-Api-Key', '']], valid: false },
  { label: 'x-key wrong', headers: [['X-Zhinian-Api-Key', 'key-c-0123456789']], valid: false },
  { label: 'x-key with bearer', headers: [['X-Zhinian-Api-Key', `Bearer ${KEY_A}`]], valid: false },
  { label: 'cookie', headers: [['Cookie', `zhinian_session=${KEY_A}; api_key=${KEY_A}`]], valid: false },
  { label: 'query-ish', headers: [['X-Api-Key', KEY_A]], valid: false },
];

/** An Authorization/X-Zhinian-Api-Key variant: listed ones, or arbitrary bytes (never valid). */
const authArb: fc.Arbitrary<AuthVariant> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...AUTH_VARIANTS) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(
        fc.constantFrom('Authorization', 'X-Zhinian-Api-Key'),
        fc.uint8Array({ maxLength: 80 }).map((a) => a.filter((b) => b !== 10 && b !== 13)),
      )
      .map(([name, bytes]): AuthVariant => ({ label: 'bytes', headers: [[name, Buffer.from(bytes)]], valid: false })),
  },
);

const authA: [string, HeaderValue][] = [['Authorization', `Bearer ${KEY_A}`]];

function encodeBytes(s: string, keep = /[A-Za-z0-9\-._~]/): string {
  let out = '';
  for (const byte of Buffer.from(s, 'utf8')) {
    const ch = String.fromCharCode(byte);
    out += byte < 0x80 && keep.test(ch) ? ch : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function materialString(r: Recipe): string {
  if (typeof r === 'string') return r;
  if (r && typeof r === 'object' && isMarker(r, '$repeat')) {
    const m = r as { $repeat: string; $times: number };
    return m.$repeat.repeat(m.$times);
  }
  return String(jsonText(r));
}

/** A path segment: kept as a verbatim escape sequence, or a generated string percent-encoded. */
const segmentArb: fc.Arbitrary<Recipe> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      '%00',
      '%zz',
      '%',
      '%2F',
      '%2f',
      '%2e%2e',
      '..',
      '.',
      '%ED%A0%80',
      '%F0%9F%98%80',
      '%C0%AF',
      '%u0041',
      '~',
      '+',
      ';',
      ':',
      '@',
      '$',
      '!',
      '%25',
      '%0A',
      '%0D%0A',
      '%20',
      '%7F',
      '%FF',
      'job_',
      'asset_',
      '%3F',
      '%23',
    ),
  },
  { weight: 3, arbitrary: weirdString },
  { weight: 1, arbitrary: fc.record({ $repeat: fc.constantFrom('x', 'job_', '%41', '%00', '😀', 'a/'), $times: fc.integer({ min: 100, max: 3000 }) }) },
);

function segmentText(r: Recipe, raw: boolean): string {
  const s = materialString(r);
  if (/^(?:%[0-9A-Fa-f]{0,2}|%zz|%u0041)+$/.test(s) || raw) return s.replace(/[\s\u0000-\u001f\u007f]/g, (c) => encodeBytes(c));
  return encodeBytes(s, /[A-Za-z0-9\-._~!$&'()*+,;=:@]/);
}

describe(`fuzz: every endpoint with generated input (${TEST_BACKEND})`, () => {
  const w = {} as World;
  let fileServer: Awaited<ReturnType<typeof startFileServer>>;

  before(async () => {
    fileServer = await startFileServer({
      '/img.png': { body: PNG, type: 'image/png' },
      '/t.txt': { body: TEXT, type: 'text/plain' },
    });
    w.fileBase = fileServer.base;
    w.stack = await startStack({ worker: false, env: { ZHINIAN_RATE_LIMIT_JOBS_PER_MINUTE: '0' } });
    port = Number(new URL(w.stack.url).port);
    w.content = new Map();
    const upload = async (key: string, name: string, type: string, body: Buffer) => {
      const form = new FormData();
      form.append('files', new Blob([new Uint8Array(body)], { type }), name);
      const res = await w.stack.api('/api/v1/assets', { method: 'POST', body: form, key });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      w.content.set(res.body.assets[0].id, body);
      return res.body.assets[0];
    };
    w.pngAsset = await upload(KEY_A, 'ref.png', 'image/png', PNG);
    w.textAsset = await upload(KEY_A, 'notes.txt', 'text/plain', TEXT);
    w.oddNameAsset = await upload(KEY_A, '名 "quoted"; filename=evil.sh 😀\u202e.txt', 'text/plain', Buffer.from('odd'));
    w.foreignAsset = await upload(KEY_B, 'theirs.txt', 'text/plain', Buffer.from('not yours'));
    const job = await w.stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'queued for the fuzzer' } });
    assert.equal(job.status, 201, JSON.stringify(job.body));
    w.queuedJob = job.body.job;
    const foreign = await w.stack.api('/api/v1/jobs', { method: 'POST', key: KEY_B, json: { capability: 'video.generate', prompt: 'theirs' } });
    assert.equal(foreign.status, 201, JSON.stringify(foreign.body));
    w.foreignJob = foreign.body.job;
  });

  after(async () => {
    await w.stack?.stop();
    await fileServer?.close();
    if (SURVEY) {
      const lines = [...survey.entries()]
        .sort((a, b) => b[1].count - a[1].count)
        .map(([key, { count, examples }]) => `## ${count}× ${key}\n${[...examples.values()].join('\n  --\n')}`);
      console.log(`\n# fuzz survey (${TEST_BACKEND}, seed ${SEED}): ${survey.size} distinct failures\n${lines.join('\n')}`);
    }
  });

  /** Placeholders in generated paths, filled with real ids at run time. */
  function fill(path: string): string {
    return path
      .replace('{job}', w.queuedJob.id)
      .replace('{jobB}', w.foreignJob.id)
      .replace('{asset}', w.pngAsset.id)
      .replace('{text}', w.textAsset.id)
      .replace('{odd}', w.oddNameAsset.id)
      .replace('{assetB}', w.foreignAsset.id);
  }

  test('GET /api/v1/openapi.json, /capabilities, /healthz, /readyz with generated queries and headers', async (t) => {
    const endpoints: [string, (res: Answer) => void][] = [
      ['/api/v1/openapi.json', shapes.openapi],
      ['/api/v1/capabilities', shapes.capabilities],
      ['/healthz', shapes.health],
      ['/readyz', shapes.health],
    ];
    const query = fc.option(fc.array(fc.tuple(segmentArb, segmentArb), { maxLength: 3 }), { nil: undefined });
    await property(
      t,
      fuzz(
        fc.constantFrom(...endpoints),
        fc.constantFrom('GET', 'GET', 'HEAD', 'POST', 'DELETE', 'OPTIONS'),
        authArb,
        query,
        fc.option(fc.constantFrom('*/*', 'application/json', 'text/html', '', 'application/x-yaml;q=0.9, */*;q=0.1', '\u00ff'), { nil: undefined }),
        async ([path, shape], method, auth, q, accept) => {
          const qs = q === undefined ? '' : `?${q.map(([k, v]) => `${segmentText(k, false)}=${segmentText(v, false)}`).join('&')}`;
          const headers: [string, HeaderValue][] = [...auth.headers];
          if (accept !== undefined) headers.push(['Accept', accept]);
          await call({ method, target: path + qs, headers, validKey: auth.valid }, shape);
        },
      ),
      { numRuns: 120, budgetMs: 700 },
    );
  });

  /** Valid-ish bodies for each capability, then mutated: fields set to any value, deleted, or added. */
  function jobBodyArb(): fc.Arbitrary<Record<string, Recipe>> {
    const url = safeUrl(w.fileBase);
    const value = anyValue(w.fileBase);
    type Body = fc.Arbitrary<Record<string, unknown>>;
    const base = fc.constantFrom(...CAPABILITIES).chain((capability): Body => {
      switch (capability) {
        case 'image.generate':
          return fc.record(
            {
              capability: fc.constant(capability),
              prompt: fc.oneof(fc.constant('生成一张专业产品主图'), weirdString),
              width: fc.integer({ min: 64, max: 8192 }),
              height: fc.integer({ min: 64, max: 8192 }),
              scale: fc.integer({ min: 0, max: 100 }),
              quality: fc.constantFrom('low', 'medium', 'high', 'auto'),
              force_single: fc.boolean(),
              imageUrls: fc.array(url, { maxLength: 2 }),
            },
            { requiredKeys: ['capability', 'prompt'] },
          );
        case 'image.inpaint':
          return fc.record({
            capability: fc.constant(capability),
            prompt: fc.oneof(fc.constant('把选中区域文字替换成新品上市'), weirdString),
            imageUrls: fc.tuple(url, url).map((u): Recipe => u),
          });
        case 'image.upscale':
          return fc.oneof(
            fc.record(
              { capability: fc.constant(capability), imageUrls: url.map((u): Recipe => [u]), resolution: fc.constantFrom('2k', '4k', '8k') },
              { requiredKeys: ['capability', 'imageUrls'] },
            ),
            fc.constant({ capability, inputAssetIds: [w.pngAsset.id] }),
          );
        case 'video.generate':
          return fc.record(
            {
              capability: fc.constant(capability),
              prompt: fc.oneof(fc.constant('生成一条 9:16 品牌短视频'), weirdString),
              settings: fc.record(
                {
                  ratio: fc.constantFrom('16:9', '4:3', '1:1', '3:4', '9:16', '21:9', 'adaptive'),
                  duration: fc.integer({ min: 4, max: 15 }),
                  resolution: fc.constantFrom('480p', '720p', '1080p'),
                },
                { requiredKeys: [] },
              ),
              materials: fc.array(
                fc.oneof(
                  fc.record({ type: fc.constantFrom('image', 'video', 'audio'), url, label: fc.oneof(fc.constant('@图片1'), weirdString) }, { requiredKeys: ['type', 'url'] }),
                  fc.constant({ type: 'image', assetId: w.pngAsset.id }),
                ),
                { maxLength: 2 },
              ),
            },
            { requiredKeys: ['capability'] },
          );
      }
    });
    const fieldPath = fc.oneof(
      fc.constantFrom(
        'capability',
        'prompt',
        'width',
        'height',
        'scale',
        'quality',
        'force_single',
        'resolution',
        'settings',
        'settings.ratio',
        'settings.duration',
        'settings.resolution',
        'settings.extra',
        'materials',
        'materials.0',
        'materials.0.type',
        'materials.0.url',
        'materials.0.assetId',
        'materials.0.label',
        'imageUrls',
        'imageUrls.0',
        'inputUrls',
        'inputAssetIds',
        'inputAssetIds.0',
        'webhookUrl',
        'metadata',
        'metadata.note',
        'metadata.__proto__',
        'engine',
        'colour',
        '__proto__',
        'constructor',
        'prototype',
        'toString',
        'hasOwnProperty',
        '',
      ),
      fc.string({ maxLength: 8 }),
    );
    type Mutation = { set: string; to: Recipe } | { del: string };
    const mutation: fc.Arbitrary<Mutation> = fc.oneof(
      { weight: 3, arbitrary: fc.record({ set: fieldPath, to: value }) },
      { weight: 1, arbitrary: fc.record({ del: fieldPath }) },
      { weight: 1, arbitrary: fc.record({ set: fc.constant('webhookUrl'), to: url.map((u): Recipe => u) }) },
      {
        weight: 1,
        arbitrary: fc.record({ set: fc.constant('metadata'), to: fc.dictionary(fc.oneof(fc.string({ maxLength: 6 }), weirdString.map(materialString)), value, { maxKeys: 4 }) }),
      },
      { weight: 1, arbitrary: fc.record({ set: fc.constant('engine'), to: fc.oneof(fc.constantFrom('local', 'jimeng', 'evolink', 'seedance', 'LOCAL', ''), weirdString) }) },
    );
    const mutations = fc.oneof({ weight: 1, arbitrary: fc.constant([]) }, { weight: 2, arbitrary: fc.array(mutation, { minLength: 1, maxLength: 3 }) });
    return fc.tuple(base, mutations).map(([b, muts]) => {
      const body: Record<string, Recipe> = {};
      for (const [k, v] of Object.entries(b)) put(body, k, v as Recipe);
      for (const m of muts) {
        const path = ('set' in m ? m.set : m.del).split('.');
        let at: any = body;
        for (const part of path.slice(0, -1)) {
          const next = Object.hasOwn(at, part) ? at[part] : undefined;
          if (next === null || typeof next !== 'object' || isMarker(next, '$deep') || isMarker(next, '$repeat') || isMarker(next, '$raw')) {
            const fresh = /^\d+$/.test(path[path.indexOf(part) + 1] ?? '') ? [] : {};
            if (Array.isArray(at)) at[Number(part)] = fresh;
            else put(at, part, fresh as Recipe);
            at = fresh;
          } else {
            const copy = Array.isArray(next) ? [...next] : Object.defineProperties({}, Object.getOwnPropertyDescriptors(next));
            if (Array.isArray(at)) at[Number(part)] = copy;
            else put(at, part, copy as Recipe);
            at = copy;
          }
        }
        const last = path[path.length - 1];
        if ('set' in m) {
          if (Array.isArray(at)) at[Number(last) || 0] = m.to;
          else put(at, last, m.to);
        } else if (Array.isArray(at)) at.splice(Number(last) || 0, 1);
        else delete at[last];
      }
      return body;
    });
  }

  const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 40 });
  const idempotencyArb: fc.Arbitrary<HeaderValue | undefined> = fc.option(
    fc.oneof(
      { weight: 3, arbitrary: printable.map((s) => `fuzz-${s}`) },
      { weight: 1, arbitrary: fc.uint8Array({ minLength: 0, maxLength: 300 }).map((a) => Buffer.from(a.filter((b) => b !== 10 && b !== 13))) },
      {
        weight: 1,
        arbitrary: fc.constantFrom('', ' ', 'k'.repeat(255), 'k'.repeat(256), 'k'.repeat(5000), Buffer.from('幂等-1', 'utf8'), Buffer.from('cl\xe9', 'latin1'), 'a\tb', '\u007f'),
      },
    ),
    { nil: undefined, freq: 2 },
  );
  const jsonContentType = fc.constantFrom(
    'application/json',
    'application/json',
    'application/json',
    'application/json; charset=utf-8',
    'Application/JSON',
    'application/json;charset=UTF-8',
    'application/json; charset=latin1',
    'application/json; charset=utf-16',
    'application/vnd.api+json',
    'application/merge-patch+json',
    'application/json, text/plain',
  );

  test('POST /api/v1/jobs with generated bodies for all four capabilities, and Idempotency-Key replays', async (t) => {
    await property(
      t,
      fuzz(jobBodyArb(), idempotencyArb, jsonContentType, async (body, idempotencyKey, contentType) => {
        const headers: [string, HeaderValue][] = [...authA, ['Content-Type', contentType]];
        if (idempotencyKey !== undefined) headers.push(['Idempotency-Key', idempotencyKey]);
        const text = jsonText(body);
        const req: RawRequest = { method: 'POST', target: '/api/v1/jobs', headers, body: text, validKey: true };
        const res = await call(req, shapes.created);
        if (res.status === 200) check(idempotencyKey !== undefined, 'POST /jobs answered 200 (reused) without an Idempotency-Key', req, res);
        if (res.status !== 201) return;
        check(res.json.job.status === 'queued', 'a new job is not queued', req, res);
        check(res.json.job.capability === body.capability, 'job.capability is not the requested one', req, res);
        const id = res.json.job.id as string;
        const read = await call({ method: 'GET', target: `/api/v1/jobs/${id}`, headers: authA, validKey: true }, shapes.job);
        check(read.status === 200 && read.json.job.id === id, 'a created job cannot be read back', req, read);
        if (idempotencyKey !== undefined) {
          const replay = await call(req, shapes.created);
          check(
            replay.status === 200 && replay.json.reused === true && replay.json.job.id === id,
            'replaying the same Idempotency-Key and body does not return the same job',
            req,
            replay,
          );
        }
      }),
      { numRuns: 500, budgetMs: 2200 },
    );
  });

  test('POST /api/v1/jobs with malformed bodies and Content-Type variants', async (t) => {
    const rawBody = fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
      fc.constantFrom(
        '',
        ' ',
        '[]',
        'null',
        '"str"',
        '123',
        'true',
        '{',
        '{"capability":',
        '{"capability":"image.generate","prompt":"x"}garbage',
        '{"capability":"image.generate","prompt":"x"}',
        '{"capability":"image.generate","prompt":"a","prompt":1}',
        '\ufeff{"capability":"image.generate","prompt":"x"}',
        `{"capability":"image.generate","prompt":"x","width":${'1'.repeat(5000)}}`,
        '{"__proto__":{"admin":true},"capability":"image.generate","prompt":"x"}',
        '{"constructor":{"prototype":{"x":1}},"capability":"image.generate","prompt":"x"}',
        '{"capability":"image.generate","prompt":"x\\u0000y"}',
        '{"capability":"image.generate","prompt":"\\ud800"}',
        '{"capability":"image.generate","prompt":"x"} \n\n ',
        'NaN',
        '{"capability":"image.generate","prompt":NaN}',
        "{'capability':'image.generate'}",
        '{"capability":"image.generate","prompt":"x",}',
        '{"capability":"image.generate\u0000","prompt":"x"}',
        'capability=image.generate&prompt=x',
        '--x\r\nContent-Disposition: form-data; name="files"\r\n\r\nabc\r\n--x--\r\n',
      ),
      fc.record({ $repeat: fc.constantFrom(' ', '[', '{"a":', '"', '\\'), $times: fc.integer({ min: 1000, max: 300_000 }) }).map((r) => r.$repeat.repeat(r.$times)),
    );
    const contentType = fc.option(
      fc.oneof(
        jsonContentType,
        fc.constantFrom(
          'text/plain',
          'application/x-www-form-urlencoded',
          'multipart/form-data',
          'multipart/form-data; boundary=x',
          'application/octet-stream',
          '',
          ' ',
          'json',
          'application/',
          '*/*',
          'application/json\t',
          'application/json; boundary="',
        ),
        fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a.filter((b) => b !== 10 && b !== 13))),
      ),
      { nil: undefined },
    );
    await property(
      t,
      fuzz(rawBody, contentType, idempotencyArb, async (body, ct, idempotencyKey) => {
        const headers: [string, HeaderValue][] = [...authA];
        if (ct !== undefined) headers.push(['Content-Type', ct]);
        if (idempotencyKey !== undefined) headers.push(['Idempotency-Key', idempotencyKey]);
        await call({ method: 'POST', target: '/api/v1/jobs', headers, body: typeof body === 'string' ? body : Buffer.from(body), validKey: true }, shapes.created);
      }),
      { numRuns: 200, budgetMs: 700 },
    );
  });

  test('POST /api/v1/jobs with deep and huge values (deep metadata, wide objects, long arrays)', async (t) => {
    const depth = fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 5000 }) }, { weight: 1, arbitrary: fc.constantFrom(10_000, 50_000, 200_000) });
    const shape = fc.oneof(
      fc.record({
        where: fc.constantFrom('metadata', 'metadata.inner', 'settings', 'materials', 'prompt', 'body', 'imageUrls'),
        kind: fc.constantFrom<'object' | 'array' | 'mixed'>('object', 'array', 'mixed'),
        depth,
      }),
      fc.record({ where: fc.constant('wide'), keys: fc.integer({ min: 100, max: 20_000 }) }),
      fc.record({ where: fc.constant('long-array'), items: fc.integer({ min: 17, max: 100_000 }) }),
    );
    await property(
      t,
      fuzz(shape, fc.boolean(), async (s, withKey) => {
        let text: string;
        const deep = 'depth' in s ? jsonText({ $deep: s.kind, $depth: s.depth }) : '';
        switch (s.where) {
          case 'metadata':
            text = `{"capability":"image.generate","prompt":"deep","metadata":{"d":${deep}}}`;
            break;
          case 'metadata.inner':
            text = `{"capability":"image.generate","prompt":"deep","metadata":{"a":1,"b":[${deep}]}}`;
            break;
          case 'settings':
            text = `{"capability":"video.generate","prompt":"deep","settings":${deep}}`;
            break;
          case 'materials':
            text = `{"capability":"video.generate","prompt":"deep","materials":[${deep}]}`;
            break;
          case 'prompt':
            text = `{"capability":"image.generate","prompt":${deep}}`;
            break;
          case 'imageUrls':
            text = `{"capability":"image.upscale","imageUrls":${deep}}`;
            break;
          case 'body':
            text = deep;
            break;
          case 'wide':
            text = `{"capability":"image.generate","prompt":"wide","metadata":{${Array.from({ length: s.keys }, (_, i) => `"k${i}":${i}`).join(',')}}}`;
            break;
          default:
            text = `{"capability":"image.upscale","imageUrls":[${Array.from({ length: s.items }, () => '"http://127.0.0.1:1/a.png"').join(',')}]}`;
        }
        const headers: [string, HeaderValue][] = [...authA, ['Content-Type', 'application/json']];
        if (withKey) headers.push(['Idempotency-Key', `deep-${s.where}-${'depth' in s ? s.depth : 0}-${requestCount}`]);
        await call({ method: 'POST', target: '/api/v1/jobs', headers, body: text, validKey: true }, shapes.created);
      }),
      { numRuns: 60, budgetMs: 1500 },
    );
  });

  /** Job and asset ids: real ones (own, another client's), near misses, escapes, %00, over-long. */
  const idArb: fc.Arbitrary<Recipe> = fc.oneof(
    { weight: 2, arbitrary: fc.constantFrom('{job}', '{jobB}', '{asset}', '{text}', '{odd}', '{assetB}') },
    {
      weight: 2,
      arbitrary: fc
        .tuple(
          fc.constantFrom('job_', 'asset_', '', 'JOB_', 'job-'),
          fc.string({ unit: fc.constantFrom(...'0123456789abcdefghijklmnopqrstuvwxyzA_-'), minLength: 0, maxLength: 30 }),
        )
        .map(([p, s]) => p + s),
    },
    {
      weight: 1,
      arbitrary: fc.tuple(fc.constantFrom('{job}', '{asset}'), fc.constantFrom('%00', '%20', 'x', '/', '%2F', '.json', '?', '#', '%', '.', '\u0000', ' ')).map(([id, s]) => id + s),
    },
    { weight: 3, arbitrary: segmentArb },
  );
  const idText = (r: Recipe) => {
    const s = materialString(r);
    return /^\{\w+\}/.test(s) ? segmentText(fill(s), true) : segmentText(r, false);
  };

  test('GET /api/v1/jobs/:id and POST /api/v1/jobs/:id/cancel with generated ids', async (t) => {
    await property(
      t,
      fuzz(idArb, fc.constantFrom('get', 'cancel', 'cancel-body'), fc.boolean(), async (id, op, raw) => {
        const idPart = raw ? segmentText(typeof id === 'string' ? fill(id) : id, true) : idText(id);
        // `/api/v1/jobs/` (an empty id, or one cut at `?`/`#`) is the list, trailing slash ignored.
        const listed = rawPathOf(`/api/v1/jobs/${idPart}`).replace(/\/+$/, '') === '/api/v1/jobs';
        if (op === 'get') await call({ method: 'GET', target: `/api/v1/jobs/${idPart}`, headers: authA, validKey: true }, listed ? shapes.jobList : shapes.job);
        else {
          const withBody = op === 'cancel-body';
          await call(
            {
              method: 'POST',
              target: `/api/v1/jobs/${idPart}/cancel`,
              headers: withBody ? [...authA, ['Content-Type', 'application/json']] : authA,
              body: withBody ? '{"reason":"\\u0000"}' : undefined,
              validKey: true,
            },
            shapes.job,
          );
        }
      }),
      { numRuns: 300, budgetMs: 900 },
    );
  });

  const queryKey = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom('status', 'capability', 'limit', 'before', 'kind') },
    { weight: 1, arbitrary: fc.constantFrom('', 'x', '__proto__', 'constructor', 'limit[]', 'status[0]', 'a[b]', 'LIMIT', 'signature', 'expires', 'hasOwnProperty') },
    { weight: 1, arbitrary: weirdString },
  );
  const queryValue = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...JOB_STATUSES, ...CAPABILITIES, ...ASSET_KINDS) },
    {
      weight: 3,
      arbitrary: fc.constantFrom(
        '1',
        '20',
        '200',
        '0',
        '201',
        '-1',
        '1e2',
        '0x10',
        '  5',
        'Infinity',
        'NaN',
        '1.5',
        '99999999999999999999',
        '',
        '2026-11-24T08:00:00.000Z',
        '2026-11-24T08:00:00.123004Z',
        '2026-11-24',
        '0000-01-01',
        '9999-12-31T23:59:59.999999999+14:00',
        '2026-02-30',
        '+275760-09-13T00:00:00.000Z',
        '1970-01-01T00:00:00Z',
        '2026-11-24T08:00:00.000-23:59',
        '2026-11-24T25:61:61Z',
        'yesterday',
        'null',
        'true',
      ),
    },
    { weight: 2, arbitrary: segmentArb },
    { weight: 1, arbitrary: fc.date({ noInvalidDate: true }).map((d) => d.toISOString()) },
  );
  const queryArb = fc.tuple(fc.array(fc.tuple(queryKey, queryValue, fc.boolean()), { maxLength: 5 }), fc.constantFrom('', '', '&', '&&', '#frag', '?', '=', '&=&'));
  function queryText([pairs, tail]: [[Recipe, Recipe, boolean][], string]): string {
    return `?${pairs.map(([k, v, raw]) => `${segmentText(k, raw)}=${segmentText(v, raw)}`).join('&')}${tail}`;
  }

  test('GET /api/v1/jobs and GET /api/v1/assets with generated query strings', async (t) => {
    await property(
      t,
      fuzz(fc.constantFrom('/api/v1/jobs', '/api/v1/assets'), queryArb, async (path, q) => {
        await call({ method: 'GET', target: path + queryText(q), headers: authA, validKey: true }, path.endsWith('jobs') ? shapes.jobList : shapes.assetList);
      }),
      { numRuns: 300, budgetMs: 900 },
    );
  });

  test('POST /api/v1/assets with JSON { url, name, kind } (loopback and .invalid URLs only)', async (t) => {
    const value = anyValue(w.fileBase);
    const bodyArb = fc
      .tuple(
        fc.record(
          {
            url: fc.oneof({ weight: 4, arbitrary: safeUrl(w.fileBase).map((u): Recipe => u) }, { weight: 1, arbitrary: value }),
            name: fc.oneof(weirdString, value),
            kind: fc.oneof(fc.constantFrom(...ASSET_KINDS), value),
          },
          { requiredKeys: [] },
        ),
        fc.option(fc.tuple(fc.constantFrom('extra', '__proto__', 'constructor', 'files', ''), value), { nil: undefined }),
      )
      .map(([b, extra]) => {
        const body: Record<string, Recipe> = {};
        for (const [k, v] of Object.entries(b)) put(body, k, v as Recipe);
        if (extra) put(body, extra[0], extra[1]);
        return body;
      });
    await property(
      t,
      fuzz(bodyArb, jsonContentType, async (body, contentType) => {
        const req: RawRequest = { method: 'POST', target: '/api/v1/assets', headers: [...authA, ['Content-Type', contentType]], body: jsonText(body), validKey: true };
        const res = await call(req, shapes.registered);
        if (res.status === 201) await checkDownload(res.json.asset.id, res.json.asset, undefined);
      }),
      { numRuns: 150, budgetMs: 900 },
    );
  });

  /** Downloads an asset whole and checks the bytes against its row (and the known content, if any). */
  async function checkDownload(id: string, asset: any, extraHeaders: [string, HeaderValue][] | undefined) {
    const req: RawRequest = { method: 'GET', target: `/api/v1/assets/${id}/download`, headers: [...authA, ...(extraHeaders ?? [])], validKey: true };
    const res = await call(req);
    check(res.status === 200, 'an asset just created cannot be downloaded', req, res);
    check(Number(res.headers['content-length']) === asset.bytes && res.body.length === asset.bytes, 'download length is not the asset size', req, res);
    check(createHash('sha256').update(res.body).digest('hex') === asset.sha256, 'downloaded bytes do not match asset.sha256', req, res);
    check(res.headers.etag && res.headers['content-type'] && res.headers['content-disposition'], 'download lacks ETag, Content-Type or Content-Disposition', req, res);
  }

  test('POST /api/v1/assets multipart with generated field names, filenames, contents, and malformed multipart', async (t) => {
    const content = fc.oneof(
      fc.constantFrom<'png' | 'text' | 'empty' | 'truncated-png'>('png', 'text', 'empty', 'truncated-png'),
      fc.uint8Array({ maxLength: 200 }),
      fc.record({ $repeat: fc.constantFrom('a', '\r\n--fuzz', '\u0000'), $times: fc.integer({ min: 100, max: 100_000 }) }),
    );
    const part = fc.record(
      {
        name: fc.oneof(
          { weight: 4, arbitrary: fc.constant<Recipe>('files') },
          { weight: 1, arbitrary: fc.constantFrom<Recipe>('file', 'files[]', '', 'FILES', 'note') },
          { weight: 1, arbitrary: weirdString },
        ),
        filename: fc.oneof(fc.constantFrom<Recipe>('a.png', 'notes.txt', '../../etc/passwd', 'C:\\evil\\x.png', '', '.', '..'), weirdString),
        filenameStar: fc.boolean(),
        contentType: fc.constantFrom('image/png', 'text/plain', 'application/octet-stream', '', 'image/png; charset="x', 'video/mp4'),
        content,
      },
      { requiredKeys: ['name', 'content'] },
    );
    const malform = fc.constantFrom(
      'none',
      'none',
      'none',
      'none',
      'none',
      'none',
      'none',
      'none',
      'no-closing',
      'truncated',
      'lf-only',
      'header-garbage',
      'no-disposition',
      'preamble',
      'no-boundary-param',
      'wrong-boundary',
      'quoted-boundary',
      'upper-case-type',
      'mixed',
    );
    const boundary = fc.oneof(
      fc.constantFrom('----fuzz', 'x', 'a'.repeat(70), 'b'.repeat(200), "'()+_,-./:=? "),
      fc.string({ unit: fc.constantFrom(...'abcXYZ019-_'), minLength: 1, maxLength: 20 }),
    );
    await property(
      t,
      fuzz(fc.array(part, { maxLength: 4 }), malform, boundary, fc.constantFrom(1, 1, 1, 1, 21), fc.double({ min: 0, max: 1, noNaN: true }), async (parts, how, b, copies, cut) => {
        const pieces: Buffer[] = [];
        if (how === 'preamble') pieces.push(Buffer.from('this is a preamble\r\n'));
        const nl = how === 'lf-only' ? '\n' : '\r\n';
        for (let c = 0; c < copies; c++) {
          for (const p of parts) {
            const name = materialString(p.name);
            const filename = p.filename === undefined ? undefined : materialString(p.filename);
            let disposition = `Content-Disposition: form-data; name="${name}"`;
            if (filename !== undefined) disposition += p.filenameStar ? `; filename*=UTF-8''${encodeBytes(filename)}` : `; filename="${filename}"`;
            const head = [
              `--${b}`,
              ...(how === 'no-disposition' ? [] : [disposition]),
              ...(p.contentType ? [`Content-Type: ${p.contentType}`] : []),
              ...(how === 'header-garbage' ? ['garbage line without a colon'] : []),
            ];
            pieces.push(Buffer.from(head.join(nl) + nl + nl, 'utf8'));
            const data =
              p.content === 'png'
                ? PNG
                : p.content === 'text'
                  ? TEXT
                  : p.content === 'empty'
                    ? Buffer.alloc(0)
                    : p.content === 'truncated-png'
                      ? PNG.subarray(0, 20)
                      : p.content instanceof Uint8Array
                        ? Buffer.from(p.content)
                        : Buffer.from(materialString(p.content as Recipe), 'utf8');
            pieces.push(data, Buffer.from(nl));
          }
        }
        if (how !== 'no-closing') pieces.push(Buffer.from(`--${b}--${nl}`));
        let body = Buffer.concat(pieces);
        if (how === 'truncated') body = body.subarray(0, Math.floor(body.length * cut));
        const ct =
          how === 'no-boundary-param'
            ? 'multipart/form-data'
            : how === 'wrong-boundary'
              ? `multipart/form-data; boundary=${b}x`
              : how === 'quoted-boundary'
                ? `multipart/form-data; boundary="${b}"`
                : how === 'upper-case-type'
                  ? `MULTIPART/FORM-DATA; BOUNDARY=${b}`
                  : how === 'mixed'
                    ? `multipart/mixed; boundary=${b}`
                    : `multipart/form-data; boundary=${b}`;
        const req: RawRequest = { method: 'POST', target: '/api/v1/assets', headers: [...authA, ['Content-Type', ct]], body, validKey: true };
        const res = await call(req, shapes.uploaded);
        if (res.status === 201) {
          const first = res.json.assets[0];
          await checkDownload(first.id, first, undefined);
          const meta = await call({ method: 'GET', target: `/api/v1/assets/${first.id}`, headers: authA, validKey: true }, shapes.asset);
          check(meta.status === 200 && meta.json.asset.id === first.id, 'an uploaded asset cannot be read back', req, meta);
        }
      }),
      { numRuns: 200, budgetMs: 1800 },
    );
  });

  test('GET /api/v1/assets/:id and /download with generated ids and Range / If-None-Match / If-Range headers', async (t) => {
    const range = fc.oneof(
      fc
        .tuple(fc.option(fc.integer({ min: -5, max: 600 }), { nil: undefined }), fc.option(fc.integer({ min: -5, max: 600 }), { nil: undefined }))
        .map(([a, b]) => `bytes=${a ?? ''}-${b ?? ''}`),
      fc.constantFrom(
        'bytes=0-0',
        'bytes=-1',
        'bytes=5-',
        'bytes=0-99999999999999999999',
        'bytes=99999999999999999999-',
        'bytes=0-1,3-4',
        'bytes=-0',
        'bytes=',
        'bytes=-',
        'items=0-1',
        ' bytes=1-2 ',
        'bytes=1e3-',
        'bytes=0x10-',
        'BYTES=0-1',
        'bytes = 0-1',
        'bytes=1-0',
        'bytes=-99999999999999999999',
        'bytes=0-1, 0-1',
        'bytes=\u0000-1',
      ),
      weirdString.map(materialString).filter((s) => !/[\r\n]/.test(s)),
    );
    const etagFor = (id: string) => (w.content.has(id) ? `"${createHash('sha256').update(w.content.get(id)!).digest('hex')}"` : '"nope"');
    const validator = fc.oneof(
      fc.constantFrom('etag', 'W/etag', 'etag-list', '*', '"wrong"', '', 'Tue, 01 Dec 2026 15:22:29 GMT', 'Thu, 01 Jan 1970 00:00:00 GMT'),
      weirdString.map(materialString).filter((s) => !/[\r\n]/.test(s)),
    );
    const assetRef = fc.oneof({ weight: 3, arbitrary: fc.constantFrom('{asset}', '{text}', '{odd}', '{assetB}') }, { weight: 1, arbitrary: idArb });
    await property(
      t,
      fuzz(
        assetRef,
        fc.constantFrom('meta', 'download', 'download', 'download', 'head', 'signed'),
        fc.option(range, { nil: undefined }),
        fc.option(validator, { nil: undefined }),
        fc.option(validator, { nil: undefined }),
        async (ref, op, rangeHeader, ifNoneMatch, ifRange) => {
          const refText = materialString(ref);
          const id = /^\{\w+\}$/.test(refText) ? fill(refText) : null;
          const idPart = id ?? idText(ref);
          const etag = id ? etagFor(id) : '"nope"';
          const expand = (v: string) => (v === 'etag' ? etag : v === 'W/etag' ? `W/${etag}` : v === 'etag-list' ? `"x", ${etag}` : v);
          const headers: [string, HeaderValue][] = [...authA];
          if (rangeHeader !== undefined) headers.push(['Range', rangeHeader]);
          if (ifNoneMatch !== undefined) headers.push(['If-None-Match', expand(ifNoneMatch)]);
          if (ifRange !== undefined) headers.push(['If-Range', expand(ifRange)]);
          if (op === 'meta') {
            const listed = rawPathOf(`/api/v1/assets/${idPart}`).replace(/\/+$/, '') === '/api/v1/assets';
            await call({ method: 'GET', target: `/api/v1/assets/${idPart}`, headers, validKey: true }, listed ? shapes.assetList : shapes.asset);
            return;
          }
          const target = `/api/v1/assets/${idPart}/download${op === 'signed' ? `?expires=${Math.floor(Date.now() / 1000) + 60}&signature=${encodeBytes(refText)}` : ''}`;
          const method = op === 'head' ? 'HEAD' : 'GET';
          const req: RawRequest = { method, target, headers, validKey: true };
          const res = await call(req);
          // An id cut short by `?` or `#` lands on another route; only downloads are checked below.
          if (!/\/download\/*$/.test(rawPathOf(target))) return;
          const known = id ? w.content.get(id) : undefined;
          if (res.status === 304) check(ifNoneMatch !== undefined, '304 without If-None-Match', req, res);
          if (res.status === 200 || res.status === 206) {
            check(res.headers.etag && res.headers['content-type'] && res.headers['content-disposition'], 'download lacks ETag, Content-Type or Content-Disposition', req, res);
            const length = Number(res.headers['content-length']);
            if (method === 'GET') check(length === res.body.length, 'Content-Length does not match the bytes sent', req, res);
            if (res.status === 200 && known) check(length === known.length && (method === 'HEAD' || res.body.equals(known)), 'a 200 download is not the whole asset', req, res);
            if (res.status === 206) {
              check(rangeHeader !== undefined, '206 without a Range header', req, res);
              const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers['content-range'] ?? '');
              check(m, '206 without a valid Content-Range', req, res);
              const [start, end, size] = [Number(m[1]), Number(m[2]), Number(m[3])];
              check(start <= end && end < size && length === end - start + 1, 'Content-Range does not agree with Content-Length', req, res);
              if (known && method === 'GET') check(size === known.length && res.body.equals(known.subarray(start, end + 1)), '206 bytes are not that range of the asset', req, res);
            }
          }
        },
      ),
      { numRuns: 300, budgetMs: 900 },
    );
  });

  /** Route templates (placeholders filled with real ids) for generated methods and targets. */
  const ROUTES = [
    '/api/v1/openapi.json',
    '/api/v1/capabilities',
    '/api/v1/jobs',
    '/api/v1/jobs/{job}',
    '/api/v1/jobs/{job}/cancel',
    '/api/v1/jobs/{jobB}',
    '/api/v1/assets',
    '/api/v1/assets/{asset}',
    '/api/v1/assets/{asset}/download',
    '/api/v1/assets/{assetB}/download',
    '/healthz',
    '/readyz',
    '/api/v1',
    '/api',
    '/',
    '/admin',
  ];
  /** A route with some of its characters percent-encoded, in upper or lower hex. */
  const encodedRoute = fc.tuple(fc.constantFrom(...ROUTES), fc.array(fc.nat({ max: 40 }), { maxLength: 3 }), fc.boolean());
  function encodeSome([route, indices, lower]: [string, number[], boolean]): string {
    const chars = [...fill(route)];
    for (const i of indices) {
      const at = i % chars.length;
      if (chars[at] === '/' || chars[at].startsWith('%')) continue;
      const hex = `%${chars[at].charCodeAt(0).toString(16).padStart(2, '0')}`;
      chars[at] = lower ? hex.toLowerCase() : hex.toUpperCase();
    }
    return chars.join('');
  }

  test('generated methods and request targets over a raw socket (absolute-form, repeated slashes, escapes)', async (t) => {
    const method = fc.oneof(
      {
        weight: 6,
        arbitrary: fc.constantFrom(
          'GET',
          'GET',
          'GET',
          'POST',
          'POST',
          'PUT',
          'DELETE',
          'PATCH',
          'OPTIONS',
          'HEAD',
          'TRACE',
          'PROPFIND',
          'PURGE',
          'SEARCH',
          'QUERY',
          'LINK',
          'M-SEARCH',
        ),
      },
      { weight: 1, arbitrary: fc.constantFrom('get', 'Get', 'FOO', 'G ET', 'GET\t', 'GE', 'GETT', '', 'P\u00d6ST', 'DELETE\u0000') },
      { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZ-_!#$%&*+.^`|~'), minLength: 1, maxLength: 12 }) },
    );
    const prefix = fc.oneof(
      { weight: 6, arbitrary: fc.constant('') },
      { weight: 3, arbitrary: fc.constantFrom('http://127.0.0.1', 'http://x', 'HTTP://X:1', 'https://a.invalid', 'http://127.0.0.1:1', '//', '///', 'http:', 'ftp://x') },
    );
    const pathArb = fc.oneof(
      { weight: 3, arbitrary: encodedRoute.map(encodeSome) },
      {
        weight: 2,
        arbitrary: fc
          .tuple(
            fc.array(
              fc.oneof(
                fc.constantFrom(
                  'api',
                  'v1',
                  'jobs',
                  'assets',
                  'capabilities',
                  'openapi.json',
                  'download',
                  'cancel',
                  'healthz',
                  'readyz',
                  '',
                  '.',
                  '..',
                  '%2e%2e',
                  '{job}',
                  '{asset}',
                  '{jobB}',
                ),
                segmentArb.map((s) => segmentText(s, false)),
              ),
              { maxLength: 6 },
            ),
            fc.constantFrom('/', '/', '/', '//', '/./', '\\'),
          )
          .map(([segs, sep]) => fill(`/${segs.join(sep)}`)),
      },
      {
        weight: 1,
        arbitrary: fc.constantFrom(
          '*',
          '',
          ' ',
          '/ /',
          '\\api\\v1\\jobs',
          'api/v1/jobs',
          '/api/v1/jobs/',
          '/API/V1/JOBS',
          '/api/v1//jobs',
          '/api/v1/jobs;x',
          '/api/v1/./jobs',
          '/api/v2/jobs',
          '/healthz/',
          '/readyz?x=%zz',
          '/%2e%2e/healthz',
          '/api/v1/openapi.json%00',
          `/api/v1/jobs/${'x'.repeat(20_000)}`,
        ),
      },
    );
    const suffix = fc.constantFrom('', '', '', '/', '?', '?limit=1', '?limit=%zz', '#frag', ';a=b', '?a=\u00e9', '%', '%00');
    const body = fc.option(fc.constantFrom('{"capability":"image.generate","prompt":"x"}', '{}', 'x', '{"url":"http://127.0.0.1:1/x"}'), { nil: undefined });
    await property(
      t,
      fuzz(method, prefix, pathArb, suffix, authArb, body, async (m, pre, path, suf, auth, b) => {
        const headers: [string, HeaderValue][] = [...auth.headers];
        if (b !== undefined) headers.push(['Content-Type', 'application/json']);
        await call({ method: m, target: pre + path + suf, headers, body: b, validKey: auth.valid });
      }),
      { numRuns: 500, budgetMs: 1400 },
    );
  });

  test('every endpoint with generated Authorization / X-Zhinian-Api-Key / Content-Type headers: no 2xx without a valid key', async (t) => {
    const endpoints: { method: string; path: string; body?: () => string | Buffer; type?: string; shape?: (res: Answer) => void }[] = [
      { method: 'GET', path: '/api/v1/capabilities', shape: shapes.capabilities },
      { method: 'GET', path: '/api/v1/jobs', shape: shapes.jobList },
      { method: 'GET', path: '/api/v1/jobs?limit=1&status=queued', shape: shapes.jobList },
      { method: 'GET', path: '/api/v1/jobs/{job}', shape: shapes.job },
      { method: 'POST', path: '/api/v1/jobs/{job}/cancel', shape: shapes.job },
      { method: 'POST', path: '/api/v1/jobs', body: () => '{"capability":"image.generate","prompt":"auth fuzz"}', type: 'application/json', shape: shapes.created },
      { method: 'GET', path: '/api/v1/assets', shape: shapes.assetList },
      { method: 'GET', path: '/api/v1/assets/{asset}', shape: shapes.asset },
      { method: 'GET', path: '/api/v1/assets/{asset}/download' },
      { method: 'GET', path: '/api/v1/assets/{asset}/download?expires=9999999999&signature=abc' },
      { method: 'POST', path: '/api/v1/assets', body: () => `{"url":"${w.fileBase}/t.txt","name":"auth.txt"}`, type: 'application/json', shape: shapes.registered },
      {
        method: 'POST',
        path: '/api/v1/assets',
        body: () =>
          Buffer.concat([
            Buffer.from('--zb\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'),
            PNG,
            Buffer.from('\r\n--zb--\r\n'),
          ]),
        type: 'multipart/form-data; boundary=zb',
        shape: shapes.uploaded,
      },
      { method: 'GET', path: '/api/v1/openapi.json', shape: shapes.openapi },
      { method: 'GET', path: '/healthz', shape: shapes.health },
      { method: 'GET', path: '/readyz', shape: shapes.health },
    ];
    const variant = fc.constantFrom('as-is', 'as-is', 'as-is', 'trailing-slash', 'absolute', 'absolute-other-host', 'encoded', 'double-slash', 'upper');
    const contentType = fc.option(fc.oneof(jsonContentType, fc.constantFrom('text/plain', 'multipart/form-data', 'application/x-www-form-urlencoded', '')), { nil: undefined });
    await property(
      t,
      fuzz(fc.constantFrom(...endpoints), authArb, variant, fc.array(fc.nat({ max: 30 }), { minLength: 1, maxLength: 3 }), contentType, async (e, auth, how, indices, ct) => {
        const path = fill(e.path);
        const [p, q = ''] = path.split('?');
        const qs = q ? `?${q}` : '';
        const target =
          how === 'trailing-slash'
            ? `${p}/${qs}`
            : how === 'absolute'
              ? `http://127.0.0.1:${port}${path}`
              : how === 'absolute-other-host'
                ? `http://zhinian-fuzz.invalid${path}`
                : how === 'encoded'
                  ? encodeSome([p, indices, false]) + qs
                  : how === 'double-slash'
                    ? `/${path}`
                    : how === 'upper'
                      ? p.toUpperCase() + qs
                      : path;
        const headers: [string, HeaderValue][] = [...auth.headers];
        const type = e.type && ct === undefined ? e.type : ct;
        if (type !== undefined && e.body) headers.push(['Content-Type', type]);
        await call({ method: e.method, target, headers, body: e.body?.(), validKey: auth.valid }, auth.valid === true && how === 'as-is' && type === e.type ? e.shape : undefined);
      }),
      { numRuns: 400, budgetMs: 1100 },
    );
  });
});
