/**
 * Scenario `live`: what the live status costs and how fast it is, on SQLite and PostgreSQL side by
 * side in one run (whatever --backend says):
 * - one API server process (the built `npm run server`, no worker) with 0 and then 1,000 idle
 *   event streams (10 clients × 100 jobs, one stream each): its RSS and its CPU % of one core over
 *   a window longer than the 15 s keep-alive interval;
 * - the time from a transition made by a worker in another process (bench/live-worker.ts) to the
 *   event at a client of the server: p50 and p95 over 40 progress changes and the end.
 * Targets (issue 17): +≤ 50 MB and ≤ 5 % of a core for 1,000 idle streams; p50 ≤ 50 ms on
 * PostgreSQL, ≤ 300 ms on SQLite across processes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { cpuMs, currentBackend, fmt, freshStore, judged, percentile, ROOT, setBackend, sleep, spawnNode, startZhinianServer, zhinianEnv, type Backend, type Row } from './lib.ts';

const CLIENTS = 10;
const STREAMS_PER_CLIENT = 100;
const IDLE_WINDOW_MS = 16_000;
const CHANGES = 40;
const keyOf = (i: number) => `live-bench-key-${i}-0123456789`;
const KEYS_ENV = Array.from({ length: CLIENTS }, (_, i) => `live${i}:${keyOf(i)}`).join(',');

interface OpenStream {
  abort(): void;
  /** Arrival time of each event, by its id. */
  arrivals: Map<number, number>;
  firstEvent: Promise<void>;
  ended: Promise<void>;
}

/** A raw SSE reader: notes when each `id:` arrives. */
async function openStream(url: string, key: string): Promise<OpenStream> {
  const controller = new AbortController();
  const response = await fetch(url, { headers: { authorization: `Bearer ${key}` }, signal: controller.signal });
  if (response.status !== 200 || !response.body) throw new Error(`stream ${url}: ${response.status}`);
  const arrivals = new Map<number, number>();
  let gotFirst = () => {};
  const firstEvent = new Promise<void>((resolve) => (gotFirst = resolve));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const ended = (async () => {
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        const now = Date.now();
        buffer += decoder.decode(value, { stream: true });
        let cut = buffer.indexOf('\n\n');
        while (cut >= 0) {
          const id = /^id: (\d+)$/m.exec(buffer.slice(0, cut));
          if (id) {
            arrivals.set(Number(id[1]), now);
            gotFirst();
          }
          buffer = buffer.slice(cut + 2);
          cut = buffer.indexOf('\n\n');
        }
      }
    } catch {
      // aborted
    }
  })();
  return { abort: () => controller.abort(), arrivals, firstEvent, ended };
}

async function createJob(url: string, key: string, prompt: string): Promise<string> {
  const res = await fetch(`${url}/api/v1/jobs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ capability: 'image.generate', prompt, width: 64, height: 64 }),
  });
  if (res.status !== 201) throw new Error(`create: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { job: { id: string } }).job.id;
}

/** CPU % of one core a process uses over `ms`. */
async function cpuPercent(pid: number, ms: number): Promise<number> {
  const before = cpuMs(pid);
  const t0 = performance.now();
  await sleep(ms);
  return ((cpuMs(pid) - before) / (performance.now() - t0)) * 100;
}

function rssMb(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1] ?? NaN) / 1024;
}

async function measure(backend: Backend): Promise<Row[]> {
  setBackend(backend);
  const label = backend === 'sqlite' ? 'SQLite' : 'PostgreSQL';
  const store = freshStore();
  const server = await startZhinianServer(store, { ZHINIAN_API_KEYS: KEYS_ENV, ZHINIAN_ENGINES_IMAGE_GENERATE: 'local' });
  const streams: OpenStream[] = [];
  try {
    // 1. Idle cost: jobs that stay queued (no worker runs), then one stream per job.
    const jobs: { id: string; key: string }[] = [];
    for (let c = 0; c < CLIENTS; c++) {
      for (let j = 0; j < STREAMS_PER_CLIENT; j++) jobs.push({ id: await createJob(server.url, keyOf(c), `idle ${c}/${j}`), key: keyOf(c) });
    }
    await sleep(2000);
    const rss0 = rssMb(server.pid);
    const cpu0 = await cpuPercent(server.pid, IDLE_WINDOW_MS);
    for (let i = 0; i < jobs.length; i += 50) {
      const batch = await Promise.all(jobs.slice(i, i + 50).map((job) => openStream(`${server.url}/api/v1/jobs/${job.id}/events`, job.key)));
      streams.push(...batch);
    }
    await Promise.all(streams.map((s) => s.firstEvent));
    await sleep(2000);
    const rss1 = rssMb(server.pid);
    const cpu1 = await cpuPercent(server.pid, IDLE_WINDOW_MS);
    for (const s of streams) s.abort();
    streams.length = 0;

    // 2. Latency: a worker in another process moves one job; a client of the server times each event.
    const jobId = await createJob(server.url, keyOf(0), 'watched');
    const stream = await openStream(`${server.url}/api/v1/jobs/${jobId}/events`, keyOf(0));
    streams.push(stream);
    await stream.firstEvent;
    const worker = spawnNode(path.join(ROOT, 'bench/live-worker.ts'), [jobId, String(CHANGES)], zhinianEnv(store));
    await worker.waitFor(/worker done/, 120_000);
    await Promise.race([stream.ended, sleep(5000)]);
    const commits = [...worker.output().matchAll(/^commit (\d+) (\d+)$/gm)].map((m) => [Number(m[1]), Number(m[2])] as const);
    // A change is seen when an event of its version or a newer one arrives: a stream sends the
    // job as it is when it reads it, so changes closer together than a read (or SQLite's poll)
    // are shown together, by the newest.
    const arrivals = [...stream.arrivals.entries()].sort((a, b) => a[0] - b[0]);
    const seenAt = (version: number) => arrivals.find(([id]) => id >= version)?.[1];
    const latencies = commits.flatMap(([version, at]) => {
      const seen = seenAt(version);
      return seen === undefined ? [] : [seen - at];
    });
    const p50 = percentile(latencies, 50);
    const p95 = percentile(latencies, 95);
    const target = backend === 'postgres' ? 50 : 300;
    return [
      judged(`live (${label}): server RSS MB, 0 → 1,000 idle event streams`, `${fmt(rss0)} → ${fmt(rss1)} (+${fmt(rss1 - rss0)})`, '', '', '+≤ 50 MB', rss1 - rss0 <= 50),
      judged(`live (${label}): server CPU % of one core, 0 / 1,000 idle streams (${IDLE_WINDOW_MS / 1000} s)`, `${fmt(cpu0, 2)} / ${fmt(cpu1, 2)}`, '', '', '≤ 5 %', cpu1 <= 5),
      judged(
        `live (${label}): worker transition → event at the client, other process, ms p50 / p95 (${commits.length} changes, ${arrivals.length} events)`,
        `${fmt(p50)} / ${fmt(p95)}`,
        '',
        '',
        `p50 ≤ ${target} ms`,
        latencies.length === commits.length && p50 <= target,
      ),
    ];
  } finally {
    for (const s of streams) s.abort();
    await server.stop();
  }
}

export default async function liveStatus(): Promise<Row[]> {
  const chosen = currentBackend();
  try {
    return [...(await measure('sqlite')), ...(await measure('postgres'))];
  } finally {
    setBackend(chosen);
  }
}
