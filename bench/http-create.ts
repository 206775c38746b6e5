/** Scenario 1: POST /api/v1/jobs (plain creates, no Idempotency-Key) vs a bare Fastify route, 50 connections. */
import { authHeaders, compareHttp, freshStore, httpRows, startBaseline, startZhinianServer, type Row } from './lib.ts';

export default async function httpCreate(): Promise<Row[]> {
  const zhinian = await startZhinianServer(freshStore());
  const bare = await startBaseline('fastify');
  try {
    const body = JSON.stringify({ capability: 'image.generate', prompt: 'a red fox in the snow', width: 512, height: 512 });
    const headers = { ...authHeaders, 'content-type': 'application/json' };
    const { z, b } = await compareHttp(
      { opts: { url: `${zhinian.url}/api/v1/jobs`, method: 'POST', headers, body }, pid: zhinian.pid },
      { opts: { url: `${bare.url}/x`, method: 'POST', headers, body }, pid: bare.pid },
    );
    return httpRows('POST /jobs', z, b, 0.35, 25);
  } finally {
    await Promise.all([zhinian.stop(), bare.stop()]);
  }
}
