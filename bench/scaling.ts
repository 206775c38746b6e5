/**
 * Scenario `scaling`: end-to-end queue throughput with 1, 2 and 4 worker processes, Zhinian
 * (on the bench's backend) against pg-boss@10 (local PostgreSQL) — the target — with BullMQ@5
 * (local Redis) beside it for information. Same work for all three: N jobs (BENCH_SCALING_JOBS)
 * with the same JSON body, each handled by a no-op (Zhinian: the instant engine of
 * throughput.ts), 8 jobs in flight per worker process, 16 enqueue calls in flight from one
 * producer (this process). Worker processes: bench/scaling-worker.ts (Zhinian: the real worker
 * boot, as `npm run worker`, with the instant engine; pg-boss: 8 work() handlers; BullMQ: a
 * Worker with concurrency 8).
 *
 * One run, for each system and worker count, on a fresh schema / data dir / key prefix:
 *  1. start the worker processes and wait until each is up and idle;
 *  2. SIGSTOP them, then enqueue N jobs (Zhinian: the job service's create(), as the API does;
 *     pg-boss: send(); BullMQ: Queue.add()) — "enqueue" time;
 *  3. SIGCONT them and poll (50 ms) until every job is complete — "drain" time.
 * e2e jobs/s = N / (enqueue + drain), as in throughput.ts. Stopping the workers during step 2
 * keeps process start-up out of the measurement and gives every system the same start line (a
 * full queue); drain jobs/s is the part that scales with the worker count. Runs repeat until
 * they add up to ≥ 5 s (BullMQ drains N jobs in well under that) and are pooled.
 * Also reported: CPU per job during the drain, of the worker processes and of the database
 * serving them (their PostgreSQL backends, found by application_name; the Redis server).
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { Queue } from 'bullmq';
import pg from 'pg';
import PgBoss from 'pg-boss';
import { findAssetKinds } from '../src/assets/index.ts';
import { createEngineRegistry } from '../src/engines/registry.ts';
import { createClientDirectory } from '../src/clients/index.ts';
import { createJobService } from '../src/jobs/index.ts';
import { systemClock } from '../src/lib/clock.ts';
import { createNotifier } from '../src/lib/notifier.ts';
import {
  CLIENT_ID,
  cpuMs,
  createPgSchema,
  currentBackend,
  dropPgSchema,
  fmt,
  freshStore,
  info,
  instantEngine,
  judged,
  onCleanup,
  openStore,
  PG_URL,
  randomName,
  ratioOf,
  REDIS,
  redisCleanupSync,
  psqlSync,
  ROOT,
  sleep,
  spawnNode,
  zhinianEnv,
  type Child,
  type Row,
} from './lib.ts';

const N = Number(process.env.BENCH_SCALING_JOBS ?? 5_000);
const WORKER_COUNTS = (process.env.BENCH_SCALING_WORKERS ?? '1,2,4').split(',').map(Number);
const CONCURRENCY = 8;
const PRODUCERS = 16;
const QUEUE = 'bench';
const BODY = { capability: 'image.generate', prompt: 'a red fox in the snow', width: 512, height: 512 };
const WORKER_SCRIPT = path.join(ROOT, 'bench/scaling-worker.ts');
const DRAIN_TIMEOUT_MS = 300_000;
/** Each figure pools runs of N jobs until they last this long end to end (at most MAX_RUNS). */
const MIN_MEASURE_MS = 5_000;
const MAX_RUNS = 10;

type System = 'zhinian' | 'pgboss' | 'bullmq';

interface Setup {
  spawnWorker(): Child;
  /** CPU ms used so far by the database serving the workers, per process (PostgreSQL backends, Redis). */
  serverCpu(): Promise<Map<string, number>>;
  enqueue(): Promise<unknown>;
  /** True once every job is complete. */
  done(): Promise<boolean>;
  /** Throws unless exactly N jobs completed successfully. */
  verify(): Promise<void>;
  close(): Promise<void>;
}

async function zhinian(): Promise<Setup> {
  const store = freshStore();
  const handle = await openStore(store);
  const jobs = createJobService({
    maxAttempts: 3,
    handle,
    engines: createEngineRegistry([instantEngine()]),
    assetKinds: (clientId, ids) => findAssetKinds(handle.db, clientId, ids),
    notifier: createNotifier(),
    clock: systemClock,
    allowPrivateUrls: false,
    clients: createClientDirectory(handle, { maxRunning: 0, rateLimitJobsPerMinute: 0, rateLimitRequestsPerMinute: 0 }),
  });
  const count = async (status: string) =>
    Number(
      (
        await handle.db
          .selectFrom('jobs')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('status', '=', status)
          .executeTakeFirstOrThrow()
      ).n,
    );
  const tag = randomName('zb_app_');
  const workerEnv = zhinianEnv(store, { ZHINIAN_WORKER_CONCURRENCY: String(CONCURRENCY) });
  // Tagged connections: their PostgreSQL backends' CPU is counted.
  if (store.databaseUrl) workerEnv.DATABASE_URL = `${store.databaseUrl}&application_name=${tag}`;
  return {
    spawnWorker: () => spawnNode(WORKER_SCRIPT, ['zhinian'], workerEnv, profArgs()),
    serverCpu: () => (store.databaseUrl ? backendCpu(tag) : Promise.resolve(new Map())),
    enqueue: () => jobs.create(CLIENT_ID, BODY, undefined),
    // Only unfinished jobs have a run_at (the partial index jobs_run_at): a cheap probe.
    done: async () => (await handle.db.selectFrom('jobs').select('id').where('run_at', 'is not', null).limit(1).executeTakeFirst()) === undefined,
    async verify() {
      const ok = await count('succeeded');
      if (ok !== N) throw new Error(`zhinian: ${ok}/${N} jobs succeeded`);
    },
    async close() {
      await handle.close();
      if (store.schema) dropPgSchema(store.schema);
    },
  };
}

async function pgBoss(): Promise<Setup> {
  const schema = createPgSchema('zb_pgboss_');
  const boss = new PgBoss({ connectionString: PG_URL, schema, max: 10, supervise: false, schedule: false });
  boss.on('error', (error) => console.error('pg-boss:', error.message));
  await boss.start();
  await boss.createQueue(QUEUE);
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  const one = async (text: string) => (await admin.query(text, [QUEUE])).rows[0];
  const tag = randomName('zb_app_');
  const workerUrl = `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}application_name=${tag}`;
  return {
    spawnWorker: () => spawnNode(WORKER_SCRIPT, ['pgboss', schema, String(CONCURRENCY)], { BENCH_PG_URL: workerUrl }, profArgs()),
    serverCpu: () => backendCpu(tag),
    enqueue: () => boss.send(QUEUE, BODY),
    done: async () => (await one(`select exists (select 1 from ${schema}.job where name = $1 and state < 'completed') as busy`)).busy === false,
    async verify() {
      const { n } = await one(`select count(*)::int as n from ${schema}.job where name = $1 and state = 'completed'`);
      if (n !== N) throw new Error(`pg-boss: ${n}/${N} jobs completed`);
    },
    async close() {
      await boss.stop({ graceful: false, wait: true }).catch(() => {});
      await admin.end();
      dropPgSchema(schema);
    },
  };
}

async function bullmq(): Promise<Setup> {
  const prefix = randomName('zb_bull_');
  onCleanup(() => redisCleanupSync(prefix));
  const queue = new Queue(QUEUE, { connection: REDIS, prefix });
  queue.on('error', (error) => console.error('bullmq:', error.message));
  await queue.waitUntilReady();
  return {
    spawnWorker: () => spawnNode(WORKER_SCRIPT, ['bullmq', prefix, String(CONCURRENCY)], {}, profArgs()),
    async serverCpu() {
      // The whole Redis server (one process): other users of the local Redis would count too.
      const text = execFileSync('redis-cli', ['-h', REDIS.host, '-p', String(REDIS.port), 'INFO', 'cpu'], { encoding: 'utf8', timeout: 10_000 });
      const field = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(text)?.[1] ?? NaN);
      return new Map([['redis', (field('used_cpu_user') + field('used_cpu_sys')) * 1000]]);
    },
    enqueue: () => queue.add(QUEUE, BODY),
    done: async () => (await queue.getCompletedCount()) + (await queue.getFailedCount()) >= N,
    async verify() {
      const counts = await queue.getJobCounts('completed', 'failed');
      if (counts.completed !== N) throw new Error(`bullmq: ${counts.completed}/${N} jobs completed, ${counts.failed} failed`);
    },
    async close() {
      await queue.close();
      redisCleanupSync(prefix);
    },
  };
}

/** CPU ms so far of the PostgreSQL backends whose application_name is `tag` (they run on this machine). */
async function backendCpu(tag: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const pids = psqlSync(`select pid from pg_stat_activity where application_name = '${tag}'`).split('\n').filter(Boolean);
  for (const pid of pids) {
    try {
      out.set(pid, cpuMs(Number(pid)));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** CPU ms used between two serverCpu() readings (processes born in between count in full). */
function cpuBetween(before: Map<string, number>, after: Map<string, number>): number {
  let total = 0;
  for (const [key, ms] of after) total += ms - (before.get(key) ?? 0);
  return total;
}

const SETUPS: Record<System, () => Promise<Setup>> = { zhinian, pgboss: pgBoss, bullmq };

/** BENCH_CPU_PROF=<dir>: worker processes write a .cpuprofile there too (as Zhinian servers do). */
const profArgs = () => (process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(process.env.BENCH_CPU_PROF)}`] : []);

/** Calls `fn` n times, `width` calls in flight. */
async function inParallel(n: number, width: number, fn: () => Promise<unknown>): Promise<void> {
  let started = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (started < n) {
        started++;
        await fn();
      }
    }),
  );
}

interface Measure {
  enqueueMs: number;
  drainMs: number;
  /** CPU ms during the drain: the worker processes, and the database serving them. */
  workerCpuMs: number;
  serverCpuMs: number;
}

async function measure(system: System, workers: number): Promise<Measure> {
  const setup = await SETUPS[system]();
  const procs: Child[] = [];
  try {
    for (let i = 0; i < workers; i++) procs.push(setup.spawnWorker());
    await Promise.all(procs.map((p) => p.waitFor(/worker ready/, 60_000)));
    await sleep(300); // past start-up work (first polls, prewarming)
    for (const p of procs) p.proc.kill('SIGSTOP');
    const t0 = performance.now();
    await inParallel(N, PRODUCERS, setup.enqueue);
    const enqueueMs = performance.now() - t0;
    const server0 = await setup.serverCpu();
    const cpu0 = procs.map((p) => cpuMs(p.pid));
    for (const p of procs) p.proc.kill('SIGCONT');
    const t1 = performance.now();
    const deadline = Date.now() + DRAIN_TIMEOUT_MS;
    while (!(await setup.done())) {
      if (Date.now() > deadline) throw new Error(`${system}: jobs still unfinished after ${DRAIN_TIMEOUT_MS / 1000} s`);
      const dead = procs.find((p) => p.proc.exitCode !== null || p.proc.signalCode !== null);
      if (dead) throw new Error(`${system} worker exited early:\n${dead.output().slice(-2000)}`);
      await sleep(50);
    }
    const t2 = performance.now();
    const workerCpuMs = procs.reduce((sum, p, i) => sum + cpuMs(p.pid) - cpu0[i], 0);
    const serverCpuMs = cpuBetween(server0, await setup.serverCpu());
    await setup.verify();
    return { enqueueMs, drainMs: t2 - t1, workerCpuMs, serverCpuMs };
  } finally {
    for (const p of procs) p.proc.kill('SIGCONT');
    await Promise.all(procs.map((p) => p.stop()));
    await setup.close();
  }
}

/**
 * Runs of N jobs, each on a fresh setup, until they add up to MIN_MEASURE_MS end to end (a
 * system that finishes N jobs quicker — BullMQ — is measured over several runs); pooled.
 */
async function measurePooled(system: System, workers: number): Promise<Measure & { runs: number }> {
  const total = { enqueueMs: 0, drainMs: 0, workerCpuMs: 0, serverCpuMs: 0, runs: 0 };
  while (total.runs < MAX_RUNS && total.enqueueMs + total.drainMs < MIN_MEASURE_MS) {
    const m = await measure(system, workers);
    total.enqueueMs += m.enqueueMs;
    total.drainMs += m.drainMs;
    total.workerCpuMs += m.workerCpuMs;
    total.serverCpuMs += m.serverCpuMs;
    total.runs++;
  }
  return total;
}

type Pooled = Awaited<ReturnType<typeof measurePooled>>;
const jobsPerSecond = (m: Pooled, ms: number) => (m.runs * N * 1000) / ms;
const e2e = (m: Pooled) => jobsPerSecond(m, m.enqueueMs + m.drainMs);
const drain = (m: Pooled) => jobsPerSecond(m, m.drainMs);
const cpuPerJob = (m: Pooled, ms: number) => (ms * 1000) / (m.runs * N);

export default async function scaling(): Promise<Row[]> {
  const sqlite = currentBackend() === 'sqlite';
  // pg-boss needs the local PostgreSQL and BullMQ the local Redis even on the SQLite backend:
  // without them their figures are left out (n/a), as throughput.ts does for pg-boss.
  const missing: Partial<Record<System, string>> = {};
  try {
    psqlSync('select 1', 10_000);
  } catch (error) {
    missing.pgboss = `PostgreSQL unavailable (${(error as Error).message.split('\n')[0]})`;
  }
  try {
    execFileSync('redis-cli', ['-h', REDIS.host, '-p', String(REDIS.port), 'PING'], { encoding: 'utf8', timeout: 10_000 });
  } catch (error) {
    missing.bullmq = `Redis unavailable (${(error as Error).message.split('\n')[0]})`;
  }
  const absent: Pooled = { enqueueMs: NaN, drainMs: NaN, workerCpuMs: NaN, serverCpuMs: NaN, runs: 1 };
  const results = new Map<string, Pooled>();
  const key = (s: System, w: number) => `${s}/${w}`;
  for (const workers of WORKER_COUNTS) {
    for (const system of ['zhinian', 'pgboss', 'bullmq'] as const) {
      const m = missing[system] ? absent : await measurePooled(system, workers);
      results.set(key(system, workers), m);
      if (process.env.BENCH_VERBOSE) {
        console.log(
          `\n  ${system} × ${workers}: ${m.runs} run(s), enqueue ${fmt(m.enqueueMs / 1000, 2)} s, drain ${fmt(m.drainMs / 1000, 2)} s, ` +
            `CPU µs/job worker ${fmt(cpuPerJob(m, m.workerCpuMs), 0)} db ${fmt(cpuPerJob(m, m.serverCpuMs), 0)}`,
        );
      }
    }
  }
  const get = (s: System, w: number) => results.get(key(s, w))!;
  // Enqueue does not depend on the worker count (they are stopped): pooled over all counts.
  const enq = (s: System) => {
    const all = WORKER_COUNTS.map((w) => get(s, w));
    return (all.reduce((a, m) => a + m.runs, 0) * N * 1000) / all.reduce((a, m) => a + m.enqueueMs, 0);
  };
  const rows: Row[] = [
    info(
      `scaling: Zhinian on ${sqlite ? 'SQLite' : 'PostgreSQL'}, N=${N}, ${CONCURRENCY} in flight per worker; enqueue jobs/s, ${PRODUCERS} calls in flight (base: pg-boss send)`,
      fmt(enq('zhinian'), 0),
      fmt(enq('pgboss'), 0),
      ratioOf(enq('zhinian'), enq('pgboss')),
    ),
    info('  enqueue jobs/s (base: BullMQ Queue.add)', fmt(enq('zhinian'), 0), fmt(enq('bullmq'), 0), ratioOf(enq('zhinian'), enq('bullmq'))),
  ];
  for (const w of WORKER_COUNTS) {
    const [z, b, q] = (['zhinian', 'pgboss', 'bullmq'] as const).map((s) => get(s, w));
    const procs = `${w} worker process${w > 1 ? 'es' : ''}`;
    const secs = (m: Pooled) => `${fmt((m.enqueueMs + m.drainMs) / 1000)}${m.runs > 1 ? ` (${m.runs} runs)` : ''}`;
    const cpu = (m: Pooled, inProcess = false) => `${fmt(cpuPerJob(m, m.workerCpuMs), 0)} + ${inProcess ? 'in-process' : fmt(cpuPerJob(m, m.serverCpuMs), 0)}`;
    rows.push(
      judged(`scaling e2e jobs/s, ${procs} (base: pg-boss)`, fmt(e2e(z), 0), fmt(e2e(b), 0), ratioOf(e2e(z), e2e(b)), '≥ 1.0×', missing.pgboss ? null : e2e(z) >= e2e(b)),
      info(`  drain jobs/s, ${procs} (base: pg-boss)`, fmt(drain(z), 0), fmt(drain(b), 0), ratioOf(drain(z), drain(b))),
      info(`  e2e jobs/s, ${procs} (base: BullMQ)`, fmt(e2e(z), 0), fmt(e2e(q), 0), ratioOf(e2e(z), e2e(q))),
      info(`  drain jobs/s, ${procs} (base: BullMQ)`, fmt(drain(z), 0), fmt(drain(q), 0), ratioOf(drain(z), drain(q))),
      info(`  e2e seconds: zhinian / pg-boss / BullMQ`, `${secs(z)} / ${secs(b)} / ${secs(q)}`, ''),
      info(`  drain CPU µs/job, workers + db: zhinian / pg-boss / BullMQ`, `${cpu(z, sqlite)} / ${cpu(b)} / ${cpu(q)}`, ''),
    );
  }
  if (WORKER_COUNTS.length > 1) {
    const first = WORKER_COUNTS[0];
    const last = WORKER_COUNTS[WORKER_COUNTS.length - 1];
    const gain = (s: System) => drain(get(s, last)) / drain(get(s, first));
    rows.push(info(`scaling: drain gain ${first}→${last} workers (base: pg-boss; BullMQ ${fmt(gain('bullmq'), 2)}×)`, `${fmt(gain('zhinian'), 2)}×`, `${fmt(gain('pgboss'), 2)}×`));
  }
  for (const [system, why] of Object.entries(missing)) rows.push(info(`scaling: ${system === 'pgboss' ? 'pg-boss' : 'BullMQ'} not measured`, why, ''));
  return rows;
}
