/**
 * `npm run bench [-- --backend=sqlite|postgres] [-- --only=create,get,limit,pickup,throughput,assets,remote,scaling,list,fairness,keys,console,live]`
 *
 * --backend=sqlite (default): every Zhinian instance gets a fresh SQLite file in a temp dir.
 * --backend=postgres: every Zhinian instance gets a fresh schema `zb_<random>` on the local
 *   PostgreSQL (BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432/test; loopback only),
 *   passed as DATABASE_URL with `?options=-c search_path=<schema>`; the schemas are dropped when
 *   each scenario ends, and on exit or SIGINT/SIGTERM.
 * --only=a,b: run some scenarios only (the report file is then left as it was).
 *
 * Scenarios: create, get (HTTP vs bare Fastify), limit (the same GET with the request rate
 * limit on vs off), pickup, throughput (in-process queue vs pg-boss), assets, remote, scaling
 * (1/2/4 worker processes vs pg-boss and BullMQ on the local Redis), list (1,000,000 jobs of
 * one client: page latency and EXPLAIN of the queries), fairness (fair claim vs the FIFO claim:
 * drain rate, a light client's time to start during a flood, EXPLAIN at 1,000,000 queued jobs
 * over 1,000 clients), console (GET /api/v1/jobs/:id while 8 console tabs load the usage
 * screens and the overview at 1,000,000 jobs, against no console load), live (1,000 idle event
 * streams' memory and CPU on one server, and a transition's time to reach a client, on SQLite
 * and PostgreSQL side by side whatever --backend says).
 *
 * Every figure sits next to a baseline measured in the same run (the machine is shared and
 * noisy, so ratios mean more than absolutes). PASS/MISS compares with the targets; a miss
 * never fails the run — only a crashed scenario sets a non-zero exit code. A full run writes
 * bench/last-run.md (sqlite) or bench/last-run-postgres.md (postgres): the table, then notes
 * such as the EXPLAIN plans.
 * BENCH_CPU_PROF=<dir> writes a .cpuprofile of each Zhinian server child, and of each scaling
 * worker process, into <dir>; BENCH_VERBOSE=1 prints every scaling measurement as it ends.
 * Sizes: BENCH_QUEUE_JOBS (throughput), BENCH_SCALING_JOBS / BENCH_SCALING_WORKERS (scaling),
 * BENCH_LIST_JOBS (list), BENCH_REMOTE_JOBS (remote), BENCH_FAIR_JOBS / BENCH_FAIR_DRAIN_JOBS (fairness), BENCH_CONSOLE_JOBS (console). pg-boss always runs on the local
 * PostgreSQL and BullMQ on the local Redis (127.0.0.1:6379), whatever the backend.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assets from './assets.ts';
import fairness from './fairness.ts';
import consoleKeys from './console-keys.ts';
import consoleLoad from './console-load.ts';
import httpCreate from './http-create.ts';
import httpGet from './http-get.ts';
import { cleanupSync, markdownTable, psqlSync, ROOT, setBackend, takeNotes, textTable, type Backend, type Row } from './lib.ts';
import list from './list.ts';
import liveStatus from './live-status.ts';
import pickup from './pickup.ts';
import remote from './remote.ts';
import requestLimit from './request-limit.ts';
import scaling from './scaling.ts';
import throughput from './throughput.ts';

const SCENARIOS: Record<string, () => Promise<Row[]>> = {
  create: httpCreate,
  get: httpGet,
  limit: requestLimit,
  pickup,
  throughput,
  assets,
  remote,
  scaling,
  list,
  fairness,
  keys: consoleKeys,
  console: consoleLoad,
  live: liveStatus,
};

process.on('exit', cleanupSync);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    cleanupSync();
    process.exit(130);
  });
}

const args = process.argv.slice(2);
const flag = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const bad = args.filter((a) => !/^--(only|backend)=/.test(a));
if (bad.length > 0) {
  console.error(`unknown argument(s): ${bad.join(' ')}; use --backend=sqlite|postgres and --only=<scenarios>`);
  process.exit(2);
}
const backend = (flag('backend') ?? 'sqlite') as Backend;
if (backend !== 'sqlite' && backend !== 'postgres') {
  console.error(`--backend must be sqlite or postgres, not ${backend}`);
  process.exit(2);
}
setBackend(backend);
const onlyArg = flag('only');
const selected = onlyArg !== undefined ? onlyArg.split(',').filter(Boolean) : Object.keys(SCENARIOS);
const unknown = selected.filter((name) => !SCENARIOS[name]);
if (unknown.length > 0) {
  console.error(`unknown scenario(s): ${unknown.join(', ')}; choose from ${Object.keys(SCENARIOS).join(', ')}`);
  process.exit(2);
}

let pgVersion = '';
if (backend === 'postgres') {
  try {
    pgVersion = psqlSync('show server_version', 10_000).trim();
  } catch (error) {
    console.error(`--backend=postgres needs the local PostgreSQL: ${(error as Error).message.split('\n')[0]}`);
    process.exit(2);
  }
}

const reportFile = backend === 'sqlite' ? 'bench/last-run.md' : 'bench/last-run-postgres.md';
const header = [
  `Zhinian bench — ${new Date().toISOString()} — backend: ${backend === 'sqlite' ? 'SQLite' : `PostgreSQL ${pgVersion} (a fresh schema per instance)`}`,
  `${os.cpus().length} cores (${os.cpus()[0]?.model.trim() ?? 'unknown cpu'}), Node ${process.version}, ${os.platform()} ${os.release()}`,
  `load average at start: ${os.loadavg()[0].toFixed(1)} (other work on the machine skews absolutes; compare ratios)`,
];
console.log(header.join('\n') + '\n');

const rows: Row[] = [];
let crashed = false;
const started = performance.now();
for (const name of selected) {
  const t0 = performance.now();
  process.stdout.write(`running ${name} … `);
  try {
    const result = await SCENARIOS[name]();
    rows.push(...result);
    console.log(`${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (error) {
    crashed = true;
    console.log('failed');
    console.error((error as Error).stack ?? error);
    rows.push({ scenario: name, zhinian: `error: ${(error as Error).message.split('\n')[0].slice(0, 80)}`, baseline: '', ratio: '', target: '', verdict: 'ERROR' });
  }
  cleanupSync(); // children, temp dirs, schemas and Redis keys of this scenario
}

const notes = takeNotes();
console.log(`\n${textTable(rows)}\n`);
const misses = rows.filter((r) => r.verdict === 'MISS').length;
const passes = rows.filter((r) => r.verdict === 'PASS').length;
const footer = `${passes} PASS, ${misses} MISS — ${((performance.now() - started) / 1000).toFixed(0)} s total, load average at end ${os.loadavg()[0].toFixed(1)}`;
console.log(footer);
if (notes.length > 0) console.log(`\n${notes.join('\n\n')}\n`);

if (onlyArg !== undefined) {
  console.log(`(--only run: ${reportFile} left as it was)`);
} else {
  const md = [...header.map((l) => `${l}  `), '', markdownTable(rows), '', footer, '', ...notes.flatMap((n) => [n, ''])].join('\n');
  fs.writeFileSync(path.join(ROOT, reportFile), md);
  console.log(`wrote ${reportFile}`);
}
process.exit(crashed ? 1 : 0);
