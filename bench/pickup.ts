/**
 * Scenario 3: queue pickup latency with the embedded worker (server + worker in this process,
 * production poll interval). One POST at a time with small random gaps. Two measures:
 * - created → running from the job rows (server clock, 1 ms resolution): the target's definition;
 * - POST sent → engine.run start (performance.now()): sub-ms, but an upper bound, since it
 *   includes the request itself — shown next to the POST round trip as its baseline.
 */
import { boot } from '../src/cli/boot.ts';
import { authHeaders, fmt, freshStore, info, instantEngine, judged, openStore, percentile, ratioOf, sleep, zhinianEnv, type Row } from './lib.ts';

const WARMUP = 30;
const JOBS = 300;

export default async function pickup(): Promise<Row[]> {
  const starts = new Map<string, number>();
  const waiters = new Map<string, () => void>();
  const engine = instantEngine((jobId) => {
    starts.set(jobId, performance.now());
    waiters.get(jobId)?.();
  });
  const store = freshStore();
  const running = await boot({ env: zhinianEnv(store), server: true, worker: true, engines: [engine] });
  const startOf = async (jobId: string): Promise<number> => {
    if (!starts.has(jobId)) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`job ${jobId} did not start within 5 s`)), 5000);
        waiters.set(jobId, () => (clearTimeout(timer), resolve()));
      });
      waiters.delete(jobId);
    }
    return starts.get(jobId)!;
  };
  try {
    const body = JSON.stringify({ capability: 'image.generate', prompt: 'a red fox in the snow', width: 512, height: 512 });
    const pickups: number[] = [];
    const rtts: number[] = [];
    const afterResponse: number[] = [];
    let beforeResponse = 0;
    for (let i = 0; i < WARMUP + JOBS; i++) {
      const sent = performance.now();
      const res = await fetch(`${running.url}/api/v1/jobs`, { method: 'POST', headers: { ...authHeaders, 'content-type': 'application/json' }, body });
      const { job } = (await res.json()) as { job: { id: string } };
      const answered = performance.now();
      if (res.status !== 201) throw new Error(`POST /jobs answered ${res.status}`);
      const started = await startOf(job.id);
      if (i >= WARMUP) {
        pickups.push(started - sent);
        rtts.push(answered - sent);
        afterResponse.push(started - answered);
        if (started < answered) beforeResponse++;
      }
      await sleep(3 + Math.random() * 10);
    }
    const handle = await openStore(store);
    const rows = await handle.db.selectFrom('jobs').select(['created_at_us', 'started_at']).orderBy('created_at_us').execute();
    await handle.close();
    const serverSide = rows.slice(WARMUP).map((r) => Number(r.started_at) - Math.floor(Number(r.created_at_us) / 1000));
    const s50 = percentile(serverSide, 50);
    const s99 = percentile(serverSide, 99);
    const p50 = percentile(pickups, 50);
    const p99 = percentile(pickups, 99);
    const r50 = percentile(rtts, 50);
    const r99 = percentile(rtts, 99);
    const share = `run starts p50 ${fmt(percentile(afterResponse, 50), 2)} ms after the 201 (${Math.round((100 * beforeResponse) / JOBS)}% before it)`;
    return [
      judged('pickup created→running p50 ms (server clock)', fmt(s50, 0), '—', '', '≤ 5 ms', s50 <= 5),
      info('pickup created→running p99 ms (server clock)', fmt(s99, 0), '—'),
      info('pickup p50 ms, sent→run (base: POST RTT)', fmt(p50, 2), fmt(r50, 2), ratioOf(p50, r50)),
      info('pickup p99 ms, sent→run (base: POST RTT)', fmt(p99, 2), fmt(r99, 2), ratioOf(p99, r99)),
      info(`pickup: ${share}`, `${JOBS} jobs`, ''),
    ];
  } finally {
    await running.stop();
  }
}
