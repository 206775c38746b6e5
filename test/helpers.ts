import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import type { TestContext } from 'node:test';
import path from 'node:path';
import { boot, type BootOptions, type Running } from '../src/cli/boot.ts';

export const KEY_A = 'key-a-0123456789';
export const KEY_B = 'key-b-0123456789';
export const WEBHOOK_SECRET = 'whsec-test';

export function tempDir(prefix = 'zhinian-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** The env a test stack runs with: two clients, loopback URLs allowed, fast polling. */
export function testEnv(dataDir: string, overrides: Record<string, string> = {}): Record<string, string> {
  return {
    PORT: '0',
    HOST: '127.0.0.1',
    ZHINIAN_DATA_DIR: dataDir,
    ZHINIAN_API_KEYS: `client-a:${KEY_A},client-b:${KEY_B}`,
    ZHINIAN_WEBHOOK_SECRET: WEBHOOK_SECRET,
    ZHINIAN_ALLOW_PRIVATE_URLS: 'true',
    ZHINIAN_POLL_INTERVAL_MS: '50',
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'silent',
    ...overrides,
  };
}

export interface Stack extends Running {
  url: string;
  dataDir: string;
  api(path: string, init?: RequestInit & { key?: string; json?: unknown }): Promise<{ status: number; body: any; headers: Headers }>;
}

/** The server (and, unless told otherwise, an embedded worker) in this process, on a fresh data dir. */
export async function startStack(
  opts: { env?: Record<string, string>; worker?: boolean; server?: boolean; dataDir?: string } & Pick<BootOptions, 'engines' | 'clock'> = {},
): Promise<Stack> {
  const dataDir = opts.dataDir ?? tempDir();
  const running = await boot({
    env: testEnv(dataDir, opts.env),
    server: opts.server ?? true,
    worker: opts.worker ?? true,
    engines: opts.engines,
    clock: opts.clock,
  });
  const url = running.url ?? '';
  return Object.assign(running, {
    url,
    dataDir,
    api: (p: string, init: RequestInit & { key?: string; json?: unknown } = {}) => callApi(url, p, init),
  });
}

export async function callApi(
  base: string,
  p: string,
  init: RequestInit & { key?: string; json?: unknown } = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const headers = new Headers(init.headers);
  if (init.key !== '') headers.set('authorization', `Bearer ${init.key ?? KEY_A}`);
  let body = init.body;
  if (init.json !== undefined) {
    headers.set('content-type', 'application/json');
    body = JSON.stringify(init.json);
  }
  const res = await fetch(base + p, { ...init, headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** Polls until `fn` returns a truthy value; fails with `what` after `timeoutMs`. */
export async function waitFor<T>(fn: () => Promise<T> | T, opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<NonNullable<T>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  let last: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${opts.what ?? 'condition'}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 25));
  }
}

export async function waitForJob(stack: { api: Stack['api'] }, id: string, statuses = ['succeeded', 'failed', 'expired', 'cancelled'], timeoutMs = 60_000, key = KEY_A) {
  return waitFor(
    async () => {
      const { body } = await stack.api(`/api/v1/jobs/${id}`, { key });
      return statuses.includes(body.job?.status) ? body.job : null;
    },
    { timeoutMs, what: `job ${id} to reach ${statuses.join('/')}`, intervalMs: 50 },
  );
}

export interface ReceivedHook {
  headers: http.IncomingHttpHeaders;
  raw: string;
  body: any;
  at: number;
}

/** A webhook receiver on loopback. `answer` decides each response status (default 200). */
export async function startReceiver(answer: (hook: ReceivedHook, index: number) => number | Promise<number> = () => 200) {
  const hooks: ReceivedHook[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const hook = { headers: req.headers, raw, body: JSON.parse(raw || 'null'), at: Date.now() };
      const index = hooks.push(hook) - 1;
      res.statusCode = await answer(hook, index);
      res.end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    hooks,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** A static file server on loopback for URL inputs. */
export async function startFileServer(files: Record<string, { body: Buffer; type: string }>) {
  const server = http.createServer((req, res) => {
    const file = files[req.url ?? ''];
    if (!file) {
      res.statusCode = 404;
      return res.end('missing');
    }
    res.setHeader('content-type', file.type);
    res.setHeader('content-length', file.body.length);
    res.end(file.body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { base: `http://127.0.0.1:${port}`, close: () => new Promise<void>((r) => server.close(() => r())) };
}

const ROOT = path.resolve(import.meta.dirname, '..');

/** Runs `npm start` / `server` / `worker` as a real child process (for kill and restart tests). */
export function spawnZhinian(entry: 'start' | 'server' | 'worker', env: Record<string, string>): ChildProcess & { output: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/cli', `${entry}.ts`)], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  return Object.assign(child, { output: () => out });
}

/** Waits for a spawned server to listen and returns its base URL. */
export async function listeningUrl(child: ReturnType<typeof spawnZhinian>): Promise<string> {
  return waitFor(() => /(?:running|listening) at (http:\/\/[^\s"]+)/.exec(child.output())?.[1], { timeoutMs: 30_000, what: 'server to listen' });
}

export async function killAndWait(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await exited;
}

/** Stops what a test started, newest first, even when the test failed. */
export function cleanup(t: TestContext) {
  const stops: (() => Promise<unknown>)[] = [];
  t.after(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => {});
  });
  return <T>(thing: T, stop: (thing: T) => Promise<unknown>): T => {
    stops.push(() => stop(thing));
    return thing;
  };
}

/** ffmpeg processes (not zombies) whose command line mentions `needle` (a work directory). */
export function ffmpegProcessesWith(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      const state = /^State:\s+(\w)/m.exec(fs.readFileSync(`/proc/${entry}/status`, 'utf8'))?.[1];
      if (state !== 'Z' && cmd.includes('ffmpeg') && cmd.includes(needle)) pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}
