/**
 * Shared bench helpers: the backend (SQLite or PostgreSQL) and a fresh database per Zhinian
 * instance, child processes (always cleaned up), temp dirs, RSS sampling, autocannon runs,
 * percentiles, the result table and report notes.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import { connectDb, migrateToLatest, type DbHandle } from '../src/db/index.ts';
import type { Engine } from '../src/engines/engine.ts';

export const ROOT = path.resolve(import.meta.dirname, '..');
const API_KEY = 'bench-key-0123456789';
export const CLIENT_ID = 'bench';
export const MB = 1024 * 1024;

// ---------------------------------------------------------------- results

export interface Row {
  scenario: string;
  zhinian: string;
  baseline: string;
  ratio: string;
  target: string;
  verdict: '' | 'PASS' | 'MISS' | 'n/a' | 'ERROR';
}

export const info = (scenario: string, zhinian: string, baseline: string, ratio = '', target = ''): Row => ({
  scenario,
  zhinian,
  baseline,
  ratio,
  target,
  verdict: '',
});

export function judged(scenario: string, zhinian: string, baseline: string, ratio: string, target: string, pass: boolean | null): Row {
  return { scenario, zhinian, baseline, ratio, target, verdict: pass === null ? 'n/a' : pass ? 'PASS' : 'MISS' };
}

export const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '—');
export const ratioOf = (a: number, b: number) => (b > 0 && Number.isFinite(a) ? `${(a / b).toFixed(2)}×` : '—');

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

const COLUMNS: (keyof Row)[] = ['scenario', 'zhinian', 'baseline', 'ratio', 'target', 'verdict'];

export function textTable(rows: Row[]): string {
  const widths = COLUMNS.map((c) => Math.max(c.length, ...rows.map((r) => r[c].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join(' | ');
  return [line(COLUMNS), widths.map((w) => '-'.repeat(w)).join('-+-'), ...rows.map((r) => line(COLUMNS.map((c) => r[c])))].join('\n');
}

export function markdownTable(rows: Row[]): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  return [`| ${COLUMNS.join(' | ')} |`, `| ${COLUMNS.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${COLUMNS.map((c) => esc(r[c])).join(' | ')} |`)].join('\n');
}

/** Markdown sections (EXPLAIN plans …) printed after the table and written into the report. */
const notes: string[] = [];
export function addNote(markdown: string): void {
  notes.push(markdown.trimEnd());
}
export function takeNotes(): string[] {
  return notes.splice(0);
}

// ---------------------------------------------------------------- temp dirs and children

const tempDirs: string[] = [];
const children = new Set<ChildProcess>();
/** Synchronous clean-ups (dropping schemas, Redis keys) run by cleanupSync, newest first. */
const cleanups: (() => void)[] = [];

export function onCleanup(fn: () => void): void {
  cleanups.push(fn);
}

export function tempDir(prefix = 'zhinian-bench-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

export interface Child {
  proc: ChildProcess;
  pid: number;
  output(): string;
  /** Resolves with the first capture group of `pattern` once the output matches it. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

/** `node <script> ...args` as a tracked child process (through tsx for .ts scripts). */
export function spawnNode(script: string, args: string[], env: Record<string, string>, nodeArgs: string[] = []): Child {
  const loader = script.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const proc = spawn(process.execPath, [...nodeArgs, ...loader, script, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? os.tmpdir(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  let out = '';
  const collect = (d: Buffer) => {
    out += d;
    if (out.length > 200_000) out = out.slice(-100_000);
  };
  proc.stdout!.on('data', collect);
  proc.stderr!.on('data', collect);
  return {
    proc,
    pid: proc.pid!,
    output: () => out,
    waitFor(pattern, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const deadline = Date.now() + timeoutMs;
        const check = () => {
          const m = pattern.exec(out);
          if (m) return resolve(m[1] ?? m[0]);
          if (proc.exitCode !== null || proc.signalCode !== null) return reject(new Error(`${path.basename(script)} exited early:\n${out.slice(-2000)}`));
          if (Date.now() > deadline) return reject(new Error(`${path.basename(script)} did not print ${pattern} in time:\n${out.slice(-2000)}`));
          setTimeout(check, 20);
        };
        check();
      });
    },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Kills whatever is still running and removes temp dirs; safe to call from 'exit'. */
export function cleanupSync(): void {
  for (const proc of children) {
    try {
      proc.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      fn();
    } catch (error) {
      console.error(`bench cleanup: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  for (const dir of tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------- backend and databases

export type Backend = 'sqlite' | 'postgres';
let backend: Backend = 'sqlite';
export const setBackend = (b: Backend) => {
  backend = b;
};
export const currentBackend = (): Backend => backend;

/** The local PostgreSQL (pg-boss always, Zhinian with --backend=postgres). Loopback only. */
export const PG_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const REDIS = { host: '127.0.0.1', port: 6379 };
{
  const host = new URL(PG_URL).hostname;
  if (!['127.0.0.1', 'localhost', '[::1]', '::1'].includes(host)) throw new Error(`BENCH_PG_URL must point at a loopback address, not ${host}`);
}

export const randomName = (prefix: string) => `${prefix}${randomBytes(5).toString('hex')}`;

/** PG_URL with the schema as the search_path of every connection (pg sends `options` at startup). */
const pgUrlWithSchema = (schema: string) => `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${schema}`)}`;

/** Runs SQL on the local PostgreSQL with psql (synchronous: usable from 'exit' handlers). */
export function psqlSync(sqlText: string, timeoutMs = 60_000): string {
  return execFileSync('psql', [PG_URL, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sqlText], {
    encoding: 'utf8',
    timeout: timeoutMs,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

const dropFns = new Map<string, () => void>();

/** A new, empty schema (`zb_<random>` by default), dropped by cleanupSync (or dropPgSchema). */
export function createPgSchema(prefix = 'zb_'): string {
  const schema = randomName(prefix);
  psqlSync(`create schema ${schema}`);
  let dropped = false;
  const drop = () => {
    if (dropped) return;
    dropped = true;
    // Killed children's backends may still hold locks for a moment: wait for them, briefly.
    psqlSync(`set lock_timeout = '20s'; drop schema if exists ${schema} cascade`);
  };
  dropFns.set(schema, drop);
  onCleanup(drop);
  return schema;
}
export const dropPgSchema = (schema: string) => dropFns.get(schema)?.();

/** Where one Zhinian instance keeps its data: a temp dir, plus a fresh schema on PostgreSQL. */
export interface Store {
  dataDir: string;
  /** DATABASE_URL (with search_path) on PostgreSQL; null on SQLite. */
  databaseUrl: string | null;
  schema: string | null;
}

export function freshStore(): Store {
  const dataDir = tempDir();
  if (backend === 'sqlite') return { dataDir, databaseUrl: null, schema: null };
  const schema = createPgSchema();
  return { dataDir, databaseUrl: pgUrlWithSchema(schema), schema };
}

/** A migrated connection to the store, as Zhinian makes it. */
export async function openStore(store: Store, poolMax?: number): Promise<DbHandle> {
  const handle = await connectDb({ databaseUrl: store.databaseUrl, dataDir: store.dataDir, poolMax });
  await migrateToLatest(handle);
  return handle;
}

/** Deletes the keys under a BullMQ prefix now and on cleanup. */
export function redisCleanupSync(prefix: string): void {
  const script = "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) n = n + 1 end return n";
  execFileSync('redis-cli', ['-h', REDIS.host, '-p', String(REDIS.port), 'EVAL', script, '0', `${prefix}:*`], { stdio: 'ignore', timeout: 30_000 });
}

/** Env for a Zhinian process: one bench client, production defaults otherwise. */
export function zhinianEnv(store: Store, overrides: Record<string, string> = {}): Record<string, string> {
  return {
    PORT: '0',
    HOST: '127.0.0.1',
    ZHINIAN_DATA_DIR: store.dataDir,
    ...(store.databaseUrl ? { DATABASE_URL: store.databaseUrl } : {}),
    ZHINIAN_API_KEYS: `${CLIENT_ID}:${API_KEY}`,
    LOG_LEVEL: 'warn',
    ...overrides,
  };
}

/** A CLI entry as `npm start` runs it: the bundle in dist/ (built first if stale). */
export function builtEntry(name: 'server' | 'worker' | 'start'): string {
  execFileSync(process.execPath, [path.join(ROOT, 'scripts/build.mjs')], { cwd: ROOT, stdio: 'inherit' });
  return path.join(ROOT, 'dist/cli', `${name}.mjs`);
}

/** The Zhinian API only (no worker) in a child process; BENCH_CPU_PROF=<dir> profiles it. */
export async function startZhinianServer(store: Store, overrides: Record<string, string> = {}): Promise<Child & { url: string }> {
  const prof = process.env.BENCH_CPU_PROF;
  const nodeArgs = prof ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(prof)}`] : [];
  const child = spawnNode(builtEntry('server'), [], zhinianEnv(store, overrides), nodeArgs);
  const url = await child.waitFor(/listening at (http:\/\/\S+)/);
  return Object.assign(child, { url });
}

/** bench/baseline-server.ts in a child process. */
export async function startBaseline(mode: 'fastify' | 'http', args: string[] = []): Promise<Child & { url: string }> {
  const child = spawnNode(path.join(ROOT, 'bench/baseline-server.ts'), [mode, ...args], {});
  const url = await child.waitFor(/listening at (http:\/\/\S+)/);
  return Object.assign(child, { url });
}

// ---------------------------------------------------------------- measuring

export const authHeaders = { authorization: `Bearer ${API_KEY}` };

function readRssBytes(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(status);
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Samples a process's RSS every `everyMs`; `stop()` gives the first sample and the peak. */
export function sampleRss(pid: number, everyMs = 50) {
  const before = readRssBytes(pid);
  let max = before;
  const timer = setInterval(() => {
    try {
      max = Math.max(max, readRssBytes(pid));
    } catch {
      // the process is gone
    }
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      try {
        max = Math.max(max, readRssBytes(pid));
      } catch {
        // gone
      }
      return { before, max, growth: max - before };
    },
  };
}

/** CPU time (user + system) a process has used so far, in ms (from /proc, 10 ms ticks). */
export function cpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime, stime (fields 14, 15)
}

export interface CannonResult {
  rps: number;
  p50: number;
  p99: number;
  total: number;
  /** Non-2xx responses plus connection errors and timeouts. */
  bad: number;
  /** Server CPU per request, µs: steadier than req/s on a shared machine. */
  cpuUsPerReq: number;
}

interface Target {
  opts: autocannon.Options;
  pid: number;
}

/** One autocannon run (50 connections); every response's latency is kept for exact percentiles. */
async function fire(target: Target, seconds: number, acc?: { latencies: number[]; bad: number; cpuMs: number; seconds: number }) {
  const cpu0 = cpuMs(target.pid);
  const run = autocannon({ connections: 50, ...target.opts, duration: seconds });
  if (acc) {
    run.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
      acc.latencies.push(ms);
      if (status < 200 || status > 299) acc.bad++;
    });
  }
  const r = await run;
  if (acc) {
    acc.bad += r.errors + r.timeouts;
    acc.cpuMs += cpuMs(target.pid) - cpu0;
    acc.seconds += seconds;
  }
}

/**
 * Zhinian vs its baseline under the same load: a warm-up each, then ROUNDS alternating runs
 * (z, b, z, b …) so that a noisy neighbour hurts both sides alike; results are pooled.
 */
export async function compareHttp(z: Target, b: Target, { warmupSeconds = 2, seconds = 10, rounds = 2 } = {}) {
  await fire(z, warmupSeconds);
  await fire(b, warmupSeconds);
  const accs = [z, b].map(() => ({ latencies: [] as number[], bad: 0, cpuMs: 0, seconds: 0 }));
  for (let i = 0; i < rounds; i++) {
    await fire(z, seconds / rounds, accs[0]);
    await fire(b, seconds / rounds, accs[1]);
  }
  const [zr, br] = accs.map(
    (a): CannonResult => ({
      rps: a.latencies.length / a.seconds,
      p50: percentile(a.latencies, 50),
      p99: percentile(a.latencies, 99),
      total: a.latencies.length,
      bad: a.bad,
      cpuUsPerReq: (a.cpuMs * 1000) / a.latencies.length,
    }),
  );
  return { z: zr, b: br };
}

/** An engine that succeeds at once with no outputs; `onRun` sees each job as it starts. */
export function instantEngine(onRun: (jobId: string) => void = () => {}): Engine {
  return {
    name: 'bench-instant',
    capabilities: ['image.generate'],
    async run(request) {
      onRun(request.jobId);
      return [];
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Rows for one autocannon comparison: req/s (ratio target), p50, p99 (optional absolute target). */
export function httpRows(label: string, z: CannonResult, b: CannonResult, minRatio: number, maxP99Ms?: number): Row[] {
  const errors = (r: CannonResult) => (r.bad > 0 ? ` (${r.bad} non-2xx/errors of ${r.total})` : '');
  return [
    judged(`${label} req/s`, fmt(z.rps, 0) + errors(z), fmt(b.rps, 0) + errors(b), ratioOf(z.rps, b.rps), `≥ ${minRatio}×`, z.bad === 0 && z.rps / b.rps >= minRatio),
    info(`${label} p50 ms`, fmt(z.p50), fmt(b.p50), ratioOf(z.p50, b.p50)),
    maxP99Ms === undefined
      ? info(`${label} p99 ms`, fmt(z.p99), fmt(b.p99), ratioOf(z.p99, b.p99))
      : judged(`${label} p99 ms`, fmt(z.p99), fmt(b.p99), ratioOf(z.p99, b.p99), `≤ ${maxP99Ms} ms`, z.p99 <= maxP99Ms),
    info(`${label} server CPU µs/req`, fmt(z.cpuUsPerReq, 0), fmt(b.cpuUsPerReq, 0), ratioOf(z.cpuUsPerReq, b.cpuUsPerReq)),
  ];
}
