/**
 * Scenario 4: queue throughput, create → claim → succeed, with an instant engine and 8 jobs in
 * flight. Zhinian (on the bench's backend): N creates through the job service, then an embedded
 * worker (ZHINIAN_WORKER_CONCURRENCY=8) drains them. pg-boss@10 on the local PostgreSQL: N sends,
 * then 8 fetch → complete loops drain them (pg-boss's own work() sleeps ≥ 400 ms between
 * fetches, which would cap it at 8 × 2 jobs/s; the loops are its best case).
 */
import pg from 'pg';
import PgBoss from 'pg-boss';
import { findAssetKinds } from '../src/assets/index.ts';
import { boot } from '../src/cli/boot.ts';
import { createEngineRegistry } from '../src/engines/registry.ts';
import { createClientDirectory } from '../src/clients/index.ts';
import { createJobService } from '../src/jobs/index.ts';
import { systemClock } from '../src/lib/clock.ts';
import { createNotifier } from '../src/lib/notifier.ts';
import { CLIENT_ID, fmt, freshStore, info, instantEngine, judged, onCleanup, openStore, PG_URL, psqlSync, randomName, ratioOf, sleep, zhinianEnv, type Row } from './lib.ts';

const N = Number(process.env.BENCH_QUEUE_JOBS ?? 5000);
const CONCURRENCY = 8;
const PG_SCHEMA = randomName('zb_pgboss_');
const BODY = { capability: 'image.generate', prompt: 'a red fox in the snow', width: 512, height: 512 };

interface Timing {
  insertMs: number;
  drainMs: number;
}

async function zhinian(): Promise<Timing> {
  const store = freshStore();
  const engine = instantEngine();
  const handle = await openStore(store);
  const jobs = createJobService({
    maxAttempts: 3,
    handle,
    engines: createEngineRegistry([engine]),
    assetKinds: (clientId, ids) => findAssetKinds(handle.db, clientId, ids),
    notifier: createNotifier(),
    clock: systemClock,
    allowPrivateUrls: false,
    clients: createClientDirectory(handle, { maxRunning: 0, rateLimitJobsPerMinute: 0, rateLimitRequestsPerMinute: 0 }),
  });
  const t0 = performance.now();
  for (let i = 0; i < N; i++) await jobs.create(CLIENT_ID, BODY, undefined);
  const insertMs = performance.now() - t0;

  const succeeded = async () =>
    Number(
      (
        await handle.db
          .selectFrom('jobs')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('status', '=', 'succeeded')
          .executeTakeFirstOrThrow()
      ).n,
    );
  const running = await boot({ env: zhinianEnv(store, { ZHINIAN_WORKER_CONCURRENCY: String(CONCURRENCY) }), server: false, worker: true, engines: [engine] });
  try {
    const t1 = performance.now();
    const deadline = Date.now() + 120_000;
    while ((await succeeded()) < N) {
      if (Date.now() > deadline) throw new Error(`only ${await succeeded()}/${N} jobs succeeded after 120 s`);
      await sleep(20);
    }
    return { insertMs, drainMs: performance.now() - t1 };
  } finally {
    await running.stop();
    await handle.close();
  }
}

async function pgBoss(): Promise<Timing | string> {
  const admin = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 3000 });
  try {
    await admin.connect();
  } catch (error) {
    return `unavailable (${(error as Error).message})`;
  }
  onCleanup(() => psqlSync(`drop schema if exists ${PG_SCHEMA} cascade`)); // after a crash too
  const boss = new PgBoss({ connectionString: PG_URL, schema: PG_SCHEMA, max: CONCURRENCY + 2, supervise: false, schedule: false });
  boss.on('error', (error) => console.error('pg-boss:', error.message));
  try {
    await admin.query(`drop schema if exists ${PG_SCHEMA} cascade`);
    await boss.start();
    await boss.createQueue('bench');
    const t0 = performance.now();
    for (let i = 0; i < N; i++) await boss.send('bench', BODY);
    const insertMs = performance.now() - t0;
    const t1 = performance.now();
    let done = 0;
    // Everything is queued already, so an empty fetch means this loop is done.
    const loop = async () => {
      for (;;) {
        const [job] = await boss.fetch<typeof BODY>('bench');
        if (!job) return;
        await boss.complete('bench', job.id);
        done++;
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, loop));
    if (done !== N) throw new Error(`pg-boss completed ${done}/${N} jobs`);
    return { insertMs, drainMs: performance.now() - t1 };
  } finally {
    await boss.stop({ graceful: false, wait: true }).catch(() => {});
    await admin.query(`drop schema if exists ${PG_SCHEMA} cascade`).catch(() => {});
    await admin.end();
  }
}

export default async function throughput(): Promise<Row[]> {
  const z = await zhinian();
  const b = await pgBoss();
  const rate = (ms: number) => (N * 1000) / ms;
  const zE2e = rate(z.insertMs + z.drainMs);
  if (typeof b === 'string') {
    return [
      judged(`queue e2e jobs/s (N=${N}, c=${CONCURRENCY})`, fmt(zE2e, 0), `pg-boss: ${b}`, '—', '≥ 1.0×', null),
      info('  create jobs/s (job service)', fmt(rate(z.insertMs), 0), '—'),
      info('  claim→succeed jobs/s', fmt(rate(z.drainMs), 0), '—'),
    ];
  }
  const bE2e = rate(b.insertMs + b.drainMs);
  return [
    judged(`queue e2e jobs/s (N=${N}, c=${CONCURRENCY}; base: pg-boss)`, fmt(zE2e, 0), fmt(bE2e, 0), ratioOf(zE2e, bE2e), '≥ 1.0×', zE2e / bE2e >= 1),
    info('  create jobs/s (service vs boss.send)', fmt(rate(z.insertMs), 0), fmt(rate(b.insertMs), 0), ratioOf(b.insertMs, z.insertMs)),
    info('  claim→succeed jobs/s (vs fetch→complete)', fmt(rate(z.drainMs), 0), fmt(rate(b.drainMs), 0), ratioOf(b.drainMs, z.drainMs)),
  ];
}
