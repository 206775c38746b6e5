/**
 * Shared plumbing for fake provider servers (docs/providers.md §5.1).
 *
 * A specific fake (jimeng.ts, seedance.ts, evolink.ts) declares its API routes and keeps its own
 * task records; this module does the rest:
 * - `createFakeServer({ routes })`: a Node http server on 127.0.0.1, port 0, that logs every API
 *   request (method, path, query, headers, raw and parsed body) and serves result files;
 * - `TaskClock`: task state derived from elapsed time at each poll, with an injectable `now()`,
 *   so tests never sleep longer than a short poll loop;
 * - `ScenarioSwitch` + `scenarioOf`: faults chosen per server (`setScenario(name, { times })`) or
 *   per task (a `[fake:<name>]` token in the prompt);
 * - result files at `/files/<taskId>/<n>.<ext>?expires=<ms>` with real bytes (a sharp PNG at the
 *   reported size, or the committed tiny H.264 MP4), 403 when expired or for `url_expired`,
 *   optionally throttled (`slowFile`);
 * - `fetchInputs`: the fake GETs each input URL it is given, proving signed URLs work keyless.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';

// ---------------------------------------------------------------------------------------------
// Requests and routes

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  /** Node's lower-cased header map. */
  headers: http.IncomingHttpHeaders;
  /** The body exactly as received: signature checks hash these bytes. */
  rawBody: string;
  /** Parsed JSON, or null when the body was empty or not JSON. */
  body: any;
}

export interface FakeResponse {
  status: number;
  /** Sent as `application/json`. */
  json?: unknown;
  /** Sent as is when `json` is absent. */
  body?: string | Buffer;
  headers?: Record<string, string>;
}

interface FakeRoute {
  method: 'GET' | 'POST' | 'DELETE';
  /** An exact path, or a pattern whose capture groups are passed as `params`. */
  path: string | RegExp;
  handle(req: RecordedRequest, params: string[]): FakeResponse | Promise<FakeResponse>;
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/**
 * The server-wide scenario. With `times`, it applies to that many `take()`s and then reverts to
 * `ok` ("first N submits answer 429"); without, it stays until changed.
 */
export class ScenarioSwitch {
  private name = 'ok';
  private remaining: number | null = null;

  set(name: string, opts: { times?: number } = {}): void {
    this.name = name;
    this.remaining = opts.times ?? null;
  }

  /** The current scenario, without using up one of its `times`. */
  peek(): string {
    return this.name;
  }

  /** The current scenario, using up one of its `times`. */
  take(): string {
    const current = this.name;
    if (this.remaining !== null && --this.remaining <= 0) this.set('ok');
    return current;
  }
}

const PROMPT_TOKEN = /\[fake:([a-z_]+)\]/;

/**
 * The scenario for a new task: a `[fake:<name>]` token in the prompt wins (and leaves the server
 * scenario's count alone), else the server scenario, using up one of its `times`.
 */
export function scenarioOf(prompt: unknown, server: ScenarioSwitch): string {
  const token = typeof prompt === 'string' ? PROMPT_TOKEN.exec(prompt) : null;
  return token ? token[1]! : server.take();
}

// ---------------------------------------------------------------------------------------------
// Task timing

export interface TaskTiming {
  /** Time a task spends queued before it runs (default 50). */
  queuedMs?: number;
  /** Time a task spends running before it finishes (default 150). */
  runningMs?: number;
  /** The fake's clock; tests inject one to jump ahead instead of sleeping. */
  now?: () => number;
}

type TaskPhase = 'queued' | 'running' | 'finished';

/** Task state as a function of elapsed time, so a poll's answer depends only on when it arrives. */
class TaskClock {
  readonly queuedMs: number;
  readonly runningMs: number;
  readonly now: () => number;

  constructor(opts: TaskTiming = {}) {
    this.queuedMs = opts.queuedMs ?? 50;
    this.runningMs = opts.runningMs ?? 150;
    this.now = opts.now ?? Date.now;
  }

  phaseOf(createdAtMs: number): TaskPhase {
    const elapsed = this.now() - createdAtMs;
    if (elapsed < this.queuedMs) return 'queued';
    if (elapsed < this.queuedMs + this.runningMs) return 'running';
    return 'finished';
  }

  /** 0–100, linear over the running phase. */
  progressOf(createdAtMs: number): number {
    const running = this.now() - createdAtMs - this.queuedMs;
    if (running <= 0) return 0;
    if (this.runningMs <= 0 || running >= this.runningMs) return 100;
    return Math.floor((running / this.runningMs) * 100);
  }
}

// ---------------------------------------------------------------------------------------------
// Result files

export type FileSpec = { kind: 'png'; width: number; height: number } | { kind: 'mp4' };

interface FileOptions {
  /** `url_expired`: the URL answers 403 as if its signature had lapsed. */
  forbidden?: boolean;
  /** Lifetime encoded in `?expires=` (default 24 h, as the providers document). */
  ttlMs?: number;
}

export interface SlowFileOptions {
  chunkBytes?: number;
  intervalMs?: number;
}

interface RegisteredFile {
  spec: FileSpec;
  forbidden: boolean;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * ~1 s, 320×240, H.264 yuv420p, faststart. Made once with
 * `ffmpeg -f lavfi -i testsrc=size=320x240:rate=24:duration=1 -c:v libx264 -pix_fmt yuv420p
 *  -preset veryslow -crf 40 -movflags +faststart tiny.mp4` (ffmpegPath() from src/media/ffmpeg.ts).
 */
const TINY_MP4_PATH = fileURLToPath(new URL('./fixtures/tiny.mp4', import.meta.url));

let tinyMp4: Buffer | null = null;
const pngCache = new Map<string, Promise<Buffer>>();

/** The bytes and Content-Type a result file serves. PNGs are solid, so even 4k ones stay small. */
export async function resultFileBytes(spec: FileSpec): Promise<{ bytes: Buffer; contentType: string }> {
  if (spec.kind === 'mp4') {
    tinyMp4 ??= readFileSync(TINY_MP4_PATH);
    return { bytes: tinyMp4, contentType: 'video/mp4' };
  }
  const key = `${spec.width}x${spec.height}`;
  let png = pngCache.get(key);
  if (!png) {
    png = sharp({ create: { width: spec.width, height: spec.height, channels: 3, background: '#4a7fb0' } })
      .png()
      .toBuffer();
    pngCache.set(key, png);
  }
  return { bytes: await png, contentType: 'image/png' };
}

/** Writes `bytes`, throttled to `chunkBytes` per `intervalMs` when `slow` is given. */
async function serveFile(res: http.ServerResponse, file: { bytes: Buffer; contentType: string }, slow?: SlowFileOptions | null): Promise<void> {
  res.writeHead(200, { 'content-type': file.contentType, 'content-length': String(file.bytes.length) });
  if (!slow) {
    res.end(file.bytes);
    return;
  }
  const chunkBytes = slow.chunkBytes ?? 1024;
  const intervalMs = slow.intervalMs ?? 50;
  for (let offset = 0; offset < file.bytes.length && !res.destroyed; offset += chunkBytes) {
    res.write(file.bytes.subarray(offset, offset + chunkBytes));
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  res.end();
}

// ---------------------------------------------------------------------------------------------
// Input fetching

interface InputFetch {
  url: string;
  /** HTTP status, or null when the request itself failed. */
  status: number | null;
  bytes: number;
  error?: string;
}

/** GETs each URL with no credentials at all, as a provider would. */
async function fetchInputUrls(urls: string[]): Promise<InputFetch[]> {
  return Promise.all(
    urls.map(async (url): Promise<InputFetch> => {
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
        const body = Buffer.from(await res.arrayBuffer());
        return { url, status: res.status, bytes: body.length };
      } catch (error) {
        return { url, status: null, bytes: 0, error: (error as Error).message };
      }
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// The server

export interface FakeServerOptions extends TaskTiming {
  routes: FakeRoute[];
  /** Answer for requests no route matches (default 404 `{"error":"not_found"}`). */
  fallback?(req: RecordedRequest): FakeResponse;
  /** Throttle result-file downloads (`true` = 1 KB per 50 ms). */
  slowFile?: boolean | SlowFileOptions;
  /** GET every input URL handed to `fetchInputs` (off: it records nothing). */
  fetchInputs?: boolean;
}

export interface FakeServer {
  /** `http://127.0.0.1:<port>` */
  readonly baseUrl: string;
  /** API requests in arrival order (file downloads are in `fileRequests`). */
  readonly requests: RecordedRequest[];
  readonly fileRequests: { path: string; status: number }[];
  readonly inputFetches: InputFetch[];
  readonly scenarios: ScenarioSwitch;
  readonly clock: TaskClock;
  /**
   * Replaces or delays any API answer (tests of hostile or late providers): called with each
   * recorded request and the answer the fake would give; what it returns is sent instead. Null
   * (the default): the fake's own answers.
   */
  intercept: ((req: RecordedRequest, answer: FakeResponse) => FakeResponse | Promise<FakeResponse>) | null;
  /** Registers result file `n` of a task and returns its absolute URL (expiring in 24 h). */
  fileUrl(taskId: string, n: number, spec: FileSpec, opts?: FileOptions): string;
  /** With `fetchInputs: true`, GETs the URLs and records the outcome; else resolves to []. */
  fetchInputs(urls: string[]): Promise<InputFetch[]>;
  close(): Promise<void>;
}

const FILE_PATH = /^\/files\/([^/]+)\/(\d+)\.(png|mp4)$/;

export async function createFakeServer(opts: FakeServerOptions): Promise<FakeServer> {
  const clock = new TaskClock(opts);
  const scenarios = new ScenarioSwitch();
  const requests: RecordedRequest[] = [];
  const fileRequests: { path: string; status: number }[] = [];
  const inputFetches: InputFetch[] = [];
  const files = new Map<string, RegisteredFile>();
  const slow = opts.slowFile === true ? {} : opts.slowFile || null;
  let baseUrl = '';

  async function answerFile(url: URL, res: http.ServerResponse): Promise<void> {
    const file = files.get(url.pathname);
    const expires = Number(url.searchParams.get('expires'));
    let status = 200;
    if (!file || !FILE_PATH.test(url.pathname)) status = 404;
    else if (file.forbidden || !(expires > clock.now())) status = 403;
    fileRequests.push({ path: url.pathname, status });
    if (status !== 200) {
      // Object stores answer an expired signed URL with an XML 403; the body's shape does not matter.
      res.writeHead(status, { 'content-type': 'application/xml' }).end(`<Error><Code>${status === 403 ? 'AccessDenied' : 'NoSuchKey'}</Code></Error>`);
      return;
    }
    await serveFile(res, await resultFileBytes(file!.spec), slow);
  }

  async function answerApi(req: http.IncomingMessage, url: URL, res: http.ServerResponse): Promise<void> {
    const rawBody = await readBody(req);
    const recorded: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: req.headers,
      rawBody,
      body: parseJson(rawBody),
    };
    requests.push(recorded);
    const answer = await route(opts.routes, recorded, opts.fallback);
    send(res, fake.intercept ? await fake.intercept(recorded, answer) : answer);
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://fake.invalid');
    const work = url.pathname.startsWith('/files/') ? answerFile(url, res) : answerApi(req, url, res);
    work.catch((error: unknown) => {
      // A bug in a fake must show up in the test, not hang it.
      if (!res.headersSent) send(res, { status: 599, json: { fakeError: String((error as Error)?.stack ?? error) } });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const fake: FakeServer = {
    baseUrl,
    requests,
    fileRequests,
    inputFetches,
    scenarios,
    clock,
    intercept: null,
    fileUrl(taskId, n, spec, fileOpts = {}) {
      const ext = spec.kind === 'png' ? 'png' : 'mp4';
      const path = `/files/${encodeURIComponent(taskId)}/${n}.${ext}`;
      files.set(path, { spec, forbidden: fileOpts.forbidden ?? false });
      return `${baseUrl}${path}?expires=${clock.now() + (fileOpts.ttlMs ?? DAY_MS)}`;
    },
    async fetchInputs(urls) {
      if (!opts.fetchInputs) return [];
      const results = await fetchInputUrls(urls);
      inputFetches.push(...results);
      return results;
    },
    close() {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return fake;
}

async function route(routes: FakeRoute[], req: RecordedRequest, fallback?: (req: RecordedRequest) => FakeResponse): Promise<FakeResponse> {
  for (const candidate of routes) {
    if (candidate.method !== req.method) continue;
    if (typeof candidate.path === 'string') {
      if (candidate.path === req.path) return candidate.handle(req, []);
      continue;
    }
    const match = candidate.path.exec(req.path);
    if (match) return candidate.handle(req, match.slice(1));
  }
  return fallback ? fallback(req) : { status: 404, json: { error: 'not_found' } };
}

function send(res: http.ServerResponse, answer: FakeResponse): void {
  const headers: Record<string, string> = { ...answer.headers };
  let body: string | Buffer = answer.body ?? '';
  if (answer.json !== undefined) {
    headers['content-type'] ??= 'application/json';
    body = JSON.stringify(answer.json);
  }
  res.writeHead(answer.status, headers).end(body);
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function parseJson(text: string): any {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
