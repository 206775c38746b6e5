/**
 * Scenario: what the request rate limit costs. GET /api/v1/jobs/:id on a server with
 * ZHINIAN_RATE_LIMIT_REQUESTS_PER_MINUTE set (so high that nothing is refused: every request
 * is counted in the database) against the same server with it off (the default: no query), 50
 * connections. On PostgreSQL the counting's own CPU is in the database server, not in the
 * "server CPU" row.
 */
import { authHeaders, compareHttp, freshStore, httpRows, startZhinianServer, type Row } from './lib.ts';

/** The highest value the config takes: ~20k req/s for 10 s is far below it. */
const HUGE_LIMIT = '10000000';

async function createJob(url: string): Promise<string> {
  const res = await fetch(`${url}/api/v1/jobs`, {
    method: 'POST',
    headers: { ...authHeaders, 'content-type': 'application/json' },
    body: JSON.stringify({ capability: 'image.generate', prompt: 'a red fox in the snow', width: 512, height: 512 }),
  });
  const { job } = (await res.json()) as { job: { id: string } };
  if (!job?.id) throw new Error(`could not create a job: HTTP ${res.status}`);
  return job.id;
}

export default async function requestLimit(): Promise<Row[]> {
  const on = await startZhinianServer(freshStore(), { ZHINIAN_RATE_LIMIT_REQUESTS_PER_MINUTE: HUGE_LIMIT });
  const off = await startZhinianServer(freshStore());
  try {
    const [onJob, offJob] = await Promise.all([createJob(on.url), createJob(off.url)]);
    const check = await fetch(`${on.url}/api/v1/jobs/${onJob}`, { headers: authHeaders });
    if (check.headers.get('ratelimit-limit') !== HUGE_LIMIT) throw new Error('the limited server does not count requests');
    const { z, b } = await compareHttp(
      { opts: { url: `${on.url}/api/v1/jobs/${onJob}`, headers: authHeaders }, pid: on.pid },
      { opts: { url: `${off.url}/api/v1/jobs/${offJob}`, headers: authHeaders }, pid: off.pid },
    );
    return httpRows('GET /jobs/:id, request limit on (base: off)', z, b, 0.7);
  } finally {
    await Promise.all([on.stop(), off.stop()]);
  }
}
