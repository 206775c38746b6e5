/**
 * Scenario `keys`: GET /api/v1/jobs/:id authenticated with a console key (`zk_<id>_<secret>`:
 * one cached row per key id, a hash compare, a batched last-used write) against the same
 * request with an env key (ZHINIAN_API_KEYS: compared in memory), on one server, 50 connections.
 */
import { makeKey } from '../src/clients/index.ts';
import { authHeaders, compareHttp, freshStore, httpRows, openStore, startZhinianServer, type Row } from './lib.ts';

export default async function consoleKeys(): Promise<Row[]> {
  const store = freshStore();
  const key = makeKey();
  const handle = await openStore(store);
  try {
    const now = Date.now();
    await handle.db.insertInto('clients').values({ id: 'bench-console', source: 'console', created_at: now, updated_at: now }).execute();
    await handle.db.insertInto('keys').values({ id: key.id, client_id: 'bench-console', secret_hash: key.hash, created_at: now }).execute();
  } finally {
    await handle.close();
  }
  const zhinian = await startZhinianServer(store);
  try {
    const consoleHeaders = { authorization: `Bearer ${key.secret}` };
    const created = async (headers: Record<string, string>) => {
      const res = await fetch(`${zhinian.url}/api/v1/jobs`, {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json' },
        body: JSON.stringify({ capability: 'image.generate', prompt: 'a red fox in the snow', width: 64, height: 64 }),
      });
      const { job } = (await res.json()) as { job?: { id: string } };
      if (!job?.id) throw new Error(`could not create a job: HTTP ${res.status}`);
      return job.id;
    };
    const [consoleJob, envJob] = [await created(consoleHeaders), await created(authHeaders)];
    const { z: b, b: z } = await compareHttp(
      { opts: { url: `${zhinian.url}/api/v1/jobs/${envJob}`, headers: authHeaders }, pid: zhinian.pid },
      { opts: { url: `${zhinian.url}/api/v1/jobs/${consoleJob}`, headers: consoleHeaders }, pid: zhinian.pid },
    );
    return httpRows('GET /jobs/:id, console key vs env key', z, b, 0.9);
  } finally {
    await zhinian.stop();
  }
}
