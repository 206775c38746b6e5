/** Scenario 2: GET /api/v1/jobs/:id vs a bare Fastify route, 50 connections. */
import { authHeaders, compareHttp, freshStore, httpRows, startBaseline, startZhinianServer, type Row } from './lib.ts';

export default async function httpGet(): Promise<Row[]> {
  const zhinian = await startZhinianServer(freshStore());
  const bare = await startBaseline('fastify');
  try {
    const res = await fetch(`${zhinian.url}/api/v1/jobs`, {
      method: 'POST',
      headers: { ...authHeaders, 'content-type': 'application/json' },
      body: JSON.stringify({ capability: 'image.generate', prompt: 'a red fox in the snow', width: 512, height: 512 }),
    });
    const { job } = (await res.json()) as { job: { id: string } };
    if (!job?.id) throw new Error(`could not create a job: HTTP ${res.status}`);
    const { z, b } = await compareHttp(
      { opts: { url: `${zhinian.url}/api/v1/jobs/${job.id}`, headers: authHeaders }, pid: zhinian.pid },
      { opts: { url: `${bare.url}/x`, headers: authHeaders }, pid: bare.pid },
    );
    return httpRows('GET /jobs/:id', z, b, 0.6);
  } finally {
    await Promise.all([zhinian.stop(), bare.stop()]);
  }
}
