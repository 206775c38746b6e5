/**
 * Scenario 6: one worker process tracking 500 remote tasks at once on a fake EvoLink whose
 * tasks take 2 s. Each job is a real round trip: submit, polls, result download (guarded
 * fetch), probe, store, settle. Baseline: the ideal rate of 500 tasks in flight at 2 s each
 * (250 jobs/s), so the ratio says how much of the provider's capacity the worker keeps busy.
 */
import { findAssetKinds } from '../src/assets/index.ts';
import { createEngineRegistry } from '../src/engines/registry.ts';
import { createEvolinkEngine } from '../src/engines/providers/evolink.ts';
import { createClientDirectory } from '../src/clients/index.ts';
import { createJobService } from '../src/jobs/index.ts';
import { systemClock } from '../src/lib/clock.ts';
import { createNotifier } from '../src/lib/notifier.ts';
import { startFakeEvolink } from '../test/fakes/evolink.ts';
import { builtEntry, CLIENT_ID, cpuMs, fmt, freshStore, judged, openStore, ratioOf, sampleRss, sleep, spawnNode, zhinianEnv, type Row } from './lib.ts';

const JOBS = Number(process.env.BENCH_REMOTE_JOBS ?? 2000);
const IN_FLIGHT = 500;
const TASK_MS = 2000;
const MB = 1024 * 1024;

export default async function remote(): Promise<Row[]> {
  const fake = await startFakeEvolink({ queuedMs: 200, runningMs: TASK_MS - 200 });
  try {
    const store = freshStore();
    const engineEnv = {
      ZHINIAN_EVOLINK_API_KEY: 'sk-evo-test',
      ZHINIAN_EVOLINK_BASE_URL: fake.baseUrl,
      ZHINIAN_EVOLINK_MAX_CONCURRENCY: String(IN_FLIGHT),
      ZHINIAN_REMOTE_CONCURRENCY: String(IN_FLIGHT),
      ZHINIAN_PROVIDER_POLL_INTERVAL_MS: '500',
      ZHINIAN_ALLOW_PRIVATE_URLS: 'true',
    };
    // Jobs are queued first, straight through the job service, so the worker is measured alone.
    const handle = await openStore(store);
    const evolink = createEvolinkEngine({ baseUrl: fake.baseUrl, apiKey: 'sk-evo-test', imageModel: 'gpt-image-1', httpTimeoutMs: 30_000, maxConcurrency: IN_FLIGHT });
    const jobs = createJobService({
      maxAttempts: 3,
      handle,
      engines: createEngineRegistry([evolink]),
      assetKinds: (clientId, ids) => findAssetKinds(handle.db, clientId, ids),
      notifier: createNotifier(),
      clock: systemClock,
      allowPrivateUrls: true,
      clients: createClientDirectory(handle, { maxRunning: 0, rateLimitJobsPerMinute: 0, rateLimitRequestsPerMinute: 0 }),
    });
    for (let i = 0; i < JOBS; i++) {
      await jobs.create(CLIENT_ID, { capability: 'image.generate', prompt: `remote bench ${i}`, width: 1024, height: 1024, force_single: true }, undefined);
    }

    const worker = spawnNode(builtEntry('worker'), [], zhinianEnv(store, { ...engineEnv, LOG_LEVEL: 'warn' }));
    const started = performance.now();
    const cpuBefore = cpuMs(worker.pid);
    const rss = sampleRss(worker.pid, 100);
    let done = 0;
    let maxInFlight = 0;
    const deadline = Date.now() + 300_000;
    while (done < JOBS && Date.now() < deadline) {
      await sleep(200);
      const counts = await handle.db
        .selectFrom('jobs')
        .select(['status', (eb) => eb.fn.countAll<number>().as('n')])
        .groupBy('status')
        .execute();
      const by = Object.fromEntries(counts.map((c) => [c.status, Number(c.n)]));
      done = (by.succeeded ?? 0) + (by.failed ?? 0) + (by.expired ?? 0);
      maxInFlight = Math.max(maxInFlight, by.running ?? 0);
    }
    const seconds = (performance.now() - started) / 1000;
    const cpu = cpuMs(worker.pid) - cpuBefore;
    const memory = rss.stop();
    const failed = await handle.db
      .selectFrom('jobs')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('status', '!=', 'succeeded')
      .executeTakeFirstOrThrow();
    await worker.stop();
    await handle.close();

    const jobsPerSecond = done / seconds;
    const ideal = IN_FLIGHT / (TASK_MS / 1000);
    return [
      judged(
        `remote: jobs/s, ${IN_FLIGHT} in flight, ${TASK_MS / 1000} s tasks (base: ideal)`,
        fmt(jobsPerSecond),
        fmt(ideal),
        ratioOf(jobsPerSecond, ideal),
        '≥ 100 jobs/s',
        jobsPerSecond >= 100,
      ),
      judged('remote: worker peak RSS MB', fmt(memory.max / MB), '', '', '≤ 200 MB', memory.max / MB <= 200),
      judged('remote: worker CPU % of one core', fmt((cpu / 1000 / seconds) * 100), '', '', '', null),
      judged(`remote: jobs done / not succeeded / max running`, `${done} / ${Number(failed.n)} / ${maxInFlight}`, '', '', `${JOBS} / 0`, done === JOBS && Number(failed.n) === 0),
    ];
  } finally {
    await fake.close();
  }
}
