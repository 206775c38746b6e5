/**
 * One worker process of the `scaling` scenario (bench/scaling.ts starts 1, 2 or 4 of them):
 *   zhinian             — `npm run worker` (src/cli/worker.ts) with the engine replaced by the
 *                          bench's instant engine, as throughput.ts does; DATABASE_URL and
 *                          ZHINIAN_WORKER_CONCURRENCY come from the environment
 *   pgboss <schema> <c> — pg-boss@10: c `work()` handlers (batchSize 1) on queue "bench"
 *   bullmq <prefix> <c> — a BullMQ Worker with concurrency c on queue "bench" (local Redis)
 * Every handler does the same no-op work and returns at once. Prints "worker ready" once it is
 * consuming (idle); SIGTERM stops it.
 */
const [system, name, concurrencyArg] = process.argv.slice(2);
const concurrency = Number(concurrencyArg ?? 8);
const QUEUE = 'bench';

if (system === 'zhinian') {
  const { boot } = await import('../src/cli/boot.ts');
  const { exitOnSignals, fail } = await import('../src/cli/signals.ts');
  const { instantEngine } = await import('./lib.ts');
  const starting = boot({ env: process.env, server: false, worker: true, engines: [instantEngine()] });
  exitOnSignals(starting);
  await starting.catch(fail);
} else if (system === 'pgboss') {
  const { default: PgBoss } = await import('pg-boss');
  const { PG_URL } = await import('./lib.ts');
  // The bench process created the schema and the queue; workers only consume. No supervisor or
  // scheduler here (the bench process has none either): maintenance is not part of the work.
  const boss = new PgBoss({ connectionString: PG_URL, schema: name, max: concurrency + 2, migrate: false, supervise: false, schedule: false });
  boss.on('error', (error) => console.error('pg-boss:', error.message));
  await boss.start();
  // pg-boss's work() loop sleeps out the rest of the polling interval (≥ 0.5 s) after every
  // fetch, even a fruitful one; notifyWorker() from the handler skips that sleep while jobs keep
  // coming, which is pg-boss's best case for single-job handlers. An empty fetch still sleeps.
  for (let i = 0; i < concurrency; i++) {
    let id: string | undefined;
    id = await boss.work(QUEUE, { batchSize: 1, pollingIntervalSeconds: 0.5 }, async () => {
      if (id) boss.notifyWorker(id);
    });
  }
  process.on('SIGTERM', () => {
    boss.stop({ graceful: false, wait: true }).finally(() => process.exit(0));
  });
} else if (system === 'bullmq') {
  const { Worker } = await import('bullmq');
  const { REDIS } = await import('./lib.ts');
  const worker = new Worker(QUEUE, async () => {}, { connection: REDIS, prefix: name, concurrency });
  worker.on('error', (error) => console.error('bullmq:', error.message));
  await worker.waitUntilReady();
  process.on('SIGTERM', () => {
    worker.close(true).finally(() => process.exit(0));
  });
} else {
  console.error(`unknown system ${system}`);
  process.exit(2);
}
console.log('worker ready');
