import http from 'node:http';
import { forgedSessionCookie, TEST_SESSION_SECRET } from '../test/console-helpers.ts';
import { freshStore, openStore, startZhinianServer } from './lib.ts';
import * as m from './console-load.ts';
const seed = (m as any).seedForScratch;
const store = freshStore();
await (async () => { await seed(store); })();
const handle = await openStore(store);
const { cookie } = await forgedSessionCookie(handle, 'admin');
await handle.close();
const z = await startZhinianServer(store, { ZHINIAN_SESSION_SECRET: TEST_SESSION_SECRET });
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const get = (p: string) => new Promise<number>((res) => http.get(`${z.url}${p}`, { agent, headers: { cookie } }, (r) => { let n = 0; r.on('data', (c) => (n += c.length)); r.on('end', () => res(n)); }));
for (const p of ['/admin/api/usage', '/admin/usage', '/admin/clients', '/admin?range=7d', '/admin?range=24h', '/admin/engines', '/admin/jobs?status=expired&engine=local', '/admin/api/usage?from=' + new Date(Date.now() - 6 * 86400000).toISOString().slice(0, 10)]) {
  const ts: number[] = []; let size = 0;
  for (let i = 0; i < 5; i++) { const t0 = performance.now(); size = await get(p); ts.push(performance.now() - t0); }
  ts.sort((a, b) => a - b);
  console.log(p, 'median ms', ts[2].toFixed(1), 'bytes', size);
}
await z.stop();
process.exit(0);
