/**
 * The worker side of the `live` scenario (bench/live-status.ts), a process of its own on the
 * bench's database: it takes job <id> and moves it through `progress` transitions, one every
 * ~100 ms (jittered, so SQLite's poll phase is sampled evenly), printing `commit <version> <ms>`
 * with the time just before each transition's transaction began, then settles it. The bench
 * compares those times with when each event reached a client of the server (another process).
 */
import { connectDb } from '../src/db/index.ts';
import { transition } from '../src/queue/index.ts';

const [jobId, countArg] = process.argv.slice(2);
const count = Number(countArg ?? 40);
const handle = await connectDb({ databaseUrl: process.env.DATABASE_URL ?? null, dataDir: process.env.ZHINIAN_DATA_DIR!, poolMax: 2 });
const workerId = 'bench-live-worker';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const claimed = await transition(handle, null, 'claim', { jobId: jobId! }, { workerId, leaseMs: 600_000, now: Date.now() });
if (claimed.length !== 1) throw new Error(`could not take ${jobId}`);
console.log(`commit ${claimed[0]!.version} ${Date.now()}`);
for (let i = 1; i <= count; i++) {
  await sleep(80 + Math.random() * 60);
  const at = Date.now();
  const [row] = await transition(handle, null, 'progress', { jobId: jobId!, leaseOwner: workerId }, { progress: Math.min(99, i), now: at });
  if (row) console.log(`commit ${row.version} ${at}`);
}
await sleep(100);
const at = Date.now();
const [done] = await transition(handle, null, 'succeed', { jobId: jobId!, leaseOwner: workerId }, { now: at, outputIds: [] });
if (done) console.log(`commit ${done.version} ${at}`);
console.log('worker done');
await handle.close();
