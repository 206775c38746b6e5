import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import type { TestContext } from 'node:test';
import path from 'node:path';
import { boot, type BootOptions, type Running } from '../src/cli/boot.ts';
import { sql } from 'kysely';
import { connectDb, type DbHandle, type JobsTable } from '../src/db/index.ts';
import { applyTransition, type Step } from '../src/queue/transitions.ts';

export const KEY_A = 'key-a-0123456789';
export const KEY_B = 'key-b-0123456789';
export const WEBHOOK_SECRET = 'whsec-test';

export function tempDir(prefix = 'zhinian-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * The backend this run tests: `npm test` runs every file once per backend. On PostgreSQL each
 * data dir (one stack, or several stacks sharing it) gets its own schema in database `test`,
 * so files and tests never see each other's rows.
 */
export const TEST_BACKEND: 'sqlite' | 'postgres' = process.env.ZHINIAN_TEST_BACKEND === 'postgres' ? 'postgres' : 'sqlite';
export const PG_ADMIN_URL = process.env.ZHINIAN_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
/** Groups one `npm test` run's schemas (scripts/test.mjs drops them when the run passed). */
const RUN_ID = (process.env.ZHINIAN_TEST_RUN_ID ?? `p${process.pid}`).replace(/[^a-z0-9]/gi, '').toLowerCase();
const schemasOfDataDir = new Map<string, string>();

/** Runs SQL as the admin role; synchronous so `testEnv` can stay synchronous. */
export function pgAdmin(statement: string): string {
  return execFileSync('psql', [PG_ADMIN_URL, '-v', 'ON_ERROR_STOP=1', '-qAtc', statement], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PGOPTIONS: '-c client_min_messages=warning', PGCONNECT_TIMEOUT: '5' },
  });
}

/** A PostgreSQL URL whose connections use `schema` (pg passes `options` at connection start-up). */
export function pgUrlWithSchema(schema: string, base = PG_ADMIN_URL): string {
  const url = new URL(base);
  url.searchParams.set('options', `-c search_path=${schema}`);
  return url.toString();
}

/** The DATABASE_URL for stacks on `dataDir`: null on SQLite, else its own (new) schema. */
function testDatabaseUrl(dataDir: string): string | null {
  if (TEST_BACKEND !== 'postgres') return null;
  let schema = schemasOfDataDir.get(dataDir);
  if (!schema) {
    schema = `zt_${RUN_ID}_${createHash('sha256').update(dataDir).digest('hex').slice(0, 12)}`;
    pgAdmin(`create schema if not exists ${schema}`);
    schemasOfDataDir.set(dataDir, schema);
    dropSchemasAtExit();
  }
  return pgUrlWithSchema(schema);
}

const extraSchemas: string[] = [];
let schemaCount = 0;

/** A new schema of this run (whatever the backend), dropped with the file's others. */
export function createTestSchema(opts: { owner?: string } = {}): string {
  const schema = `zt_${RUN_ID}_x${process.pid}_${++schemaCount}`;
  pgAdmin(`create schema ${schema}${opts.owner ? ` authorization ${opts.owner}` : ''}`);
  extraSchemas.push(schema);
  dropSchemasAtExit();
  return schema;
}

/** Names unique to this run and process (roles and the like). */
export const TEST_NAME_PREFIX = `zt_${RUN_ID}_${process.pid}`;

let dropRegistered = false;
/** At the end of the file: drop its schemas, unless a test failed (then they stay to be looked at). */
function dropSchemasAtExit() {
  if (dropRegistered) return;
  dropRegistered = true;
  process.once('beforeExit', () => {
    const schemas = [...schemasOfDataDir.values(), ...extraSchemas];
    if (process.exitCode || schemas.length === 0) {
      if (schemas.length > 0) console.error(`# kept PostgreSQL schemas of failed tests: ${schemas.join(', ')}`);
      return;
    }
    try {
      pgAdmin(`drop schema if exists ${schemas.join(', ')} cascade`);
    } catch {
      // scripts/test.mjs sweeps what is left
    }
  });
}

/** Opens the database the stacks on `dataDir` use (SQLite file or PostgreSQL schema). */
export function openTestDb(dataDir: string): Promise<DbHandle> {
  return connectDb({ databaseUrl: testDatabaseUrl(dataDir), dataDir, poolMax: 4 });
}

/**
 * Takes job `jobId` (queued, or due again) as a worker would, by the `claim` transition, whatever
 * its engine: the one way a job gets running with a lease and an open attempt in its history.
 * The lease lasts `leaseMs` (default an hour: no other worker takes it over meanwhile).
 */
export async function claimJob(step: Step, jobId: string, opts: { workerId: string; now?: number; leaseMs?: number }): Promise<JobsTable> {
  const [row] = await applyTransition(step, 'claim', { pick: sql<string>`${jobId}` }, { workerId: opts.workerId, leaseMs: opts.leaseMs ?? 3_600_000, now: opts.now ?? Date.now() });
  if (!row) throw new Error(`job ${jobId} could not be claimed`);
  return row;
}

/** A queued job row for inserting straight into the database; `fields` override the defaults. */
export function queuedJobRow(fields: Pick<JobsTable, 'id' | 'engine' | 'created_at_us' | 'run_at'> & Partial<JobsTable>): JobsTable {
  return {
    client_id: 'client-a',
    capability: 'image.generate',
    status: 'queued',
    prompt: 'x',
    params: '{}',
    input_asset_ids: '[]',
    output_asset_ids: '[]',
    error_code: null,
    error_message: null,
    progress: null,
    webhook_url: null,
    metadata: null,
    updated_at: Math.floor(fields.created_at_us / 1000),
    started_at: null,
    finished_at: null,
    attempts: 0,
    lease_owner: null,
    engine_state: null,
    engine_pinned: 0,
    // FIFO by creation, as the migration orders jobs queued before the fair order existed.
    fair_key: fields.created_at_us,
    version: 0,
    waiting: null,
    waiting_until: null,
    ...fields,
  };
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
    ...(TEST_BACKEND === 'postgres' ? { DATABASE_URL: testDatabaseUrl(dataDir)!, ZHINIAN_DB_POOL_MAX: '4' } : {}),
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
  opts: { env?: Record<string, string>; worker?: boolean; server?: boolean; dataDir?: string } & Pick<BootOptions, 'engines' | 'clock' | 'live'> = {},
): Promise<Stack> {
  const dataDir = opts.dataDir ?? tempDir();
  const running = await boot({
    env: testEnv(dataDir, opts.env),
    server: opts.server ?? true,
    worker: opts.worker ?? true,
    engines: opts.engines,
    clock: opts.clock,
    live: opts.live,
  });
  const url = running.url ?? '';
  return Object.assign(running, {
    url,
    dataDir,
    api: (p: string, init: RequestInit & { key?: string; json?: unknown } = {}) => callApi(url, p, init),
  });
}

export async function callApi(base: string, p: string, init: RequestInit & { key?: string; json?: unknown } = {}): Promise<{ status: number; body: any; headers: Headers }> {
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
