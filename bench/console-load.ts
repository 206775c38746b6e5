/**
 * Scenario `console`: does the console stall the API? `GET /api/v1/jobs/:id` latency while 8
 * console tabs load the usage screens, at 1,000,000 jobs (BENCH_CONSOLE_JOBS), against the same
 * requests with no console load, on one Zhinian server (dist/, own process).
 *
 * Data: 1,000,000 ended jobs over the last 30 days (one statement, as in `list`: ids made of the
 * creation time like the service's, so the overview's time ranges work as in production), over
 * 50 clients, 3 capabilities, 3 engines, all four outcomes; an output asset for every tenth
 * succeeded job; the usage roll-up back-filled as migration 0007 does.
 *
 * Phases of 8 s: idle, screens, idle, screens, API, overview. The API probe is always one
 * sequential keep-alive GET at a time (its own latency, not queueing); the 8 console tabs (8
 * loops with a forged admin session) run in another process, so their answers never delay the
 * probe's process:
 *  - idle: the probe alone (the baseline);
 *  - screens: each tab cycles `GET /admin/api/usage` (30 days, every client), the usage page and
 *    the clients page (7-day usage per client);
 *  - API: every tab on `GET /admin/api/usage`;
 *  - overview: every tab on the overview over 7 days, a scan of ~230,000 jobs per request, which
 *    runs in the console's reader (SQLite) or under its statement timeout (PostgreSQL).
 * Target: API p99 under console load ≤ 50 ms (a stall before the roll-up was 1–10 s), and no
 * /api/v1 error.
 *
 * Before/after: the usage query of before the roll-up (a grouped scan of the range's jobs
 * joined with their outputs) and the roll-up's query, each timed on the same data in this
 * process. On SQLite the old one ran on the server's only thread: every request stalled every
 * other request of the process for that long.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import { sql } from 'kysely';
import { backfillUsage } from '../src/db/migrations/0007-usage-rollup.ts';
import { FORGED_ROLE_ENV, forgedSessionCookie, TEST_SESSION_SECRET } from '../test/console-helpers.ts';
import { consolePlans } from './console-plans.ts';
import { addNote, authHeaders, currentBackend, fmt, freshStore, info, judged, openStore, percentile, ratioOf, startZhinianServer, type Row, type Store } from './lib.ts';

const JOBS = Number(process.env.BENCH_CONSOLE_JOBS ?? 1_000_000);
const TABS = 8;
const PHASE_MS = 8000;
const DAY_MS = 86_400_000;
const SPAN_MS = 30 * DAY_MS;
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

/** SQL for the 10 Crockford base32 characters of the millisecond time `ms` (lib/ids.ts's layout). */
function timeChars(ms: string): string {
  const parts: string[] = [];
  for (let k = 9; k >= 0; k--) parts.push(`substr('${ALPHABET}', cast(((${ms} >> ${5 * k}) & 31) as integer) + 1, 1)`);
  return parts.join(' || ');
}

async function seed(store: Store): Promise<{ insertMs: number; backfillMs: number }> {
  const handle = await openStore(store);
  try {
    const base = Date.now() - SPAN_MS;
    const step = Math.floor(SPAN_MS / JOBS);
    const ms = `(${base} + cast(g as bigint) * ${step})`;
    const pad = handle.dialect === 'postgres' ? `lpad(g::text, 16, '0')` : `printf('%016d', g)`;
    const rows = `
      'job_' || ${timeChars(ms)} || ${pad},
      'client-' || (g % 50),
      case when g % 8 = 4 then 'image.upscale' when g % 25 = 11 then 'video.generate' else 'image.generate' end,
      case when g % 20 = 0 then 'failed' when g % 97 = 3 then 'expired' when g % 50 = 7 then 'cancelled' else 'succeeded' end,
      'a red fox in the snow', '{}', '[]', '[]', null, null, null,
      case g % 3 when 0 then 'local' when 1 then 'jimeng' else 'seedance' end,
      null, null, ${ms} * 1000, ${ms} + 5000, ${ms} + 100, ${ms} + 5000, 1, null, null, null, 0, 0`;
    const columns =
      'id, client_id, capability, status, prompt, params, input_asset_ids, output_asset_ids, error_code, error_message, progress, engine, webhook_url, metadata, ' +
      'created_at_us, updated_at, started_at, finished_at, attempts, run_at, lease_owner, engine_state, engine_pinned, fair_key';
    const series = handle.dialect === 'postgres' ? `generate_series(1, ${JOBS}) as g` : `s`;
    const recursive = handle.dialect === 'postgres' ? '' : `with recursive s(g) as (select 1 union all select g + 1 from s where g < ${JOBS}) `;
    const t0 = performance.now();
    await sql.raw(`insert into jobs (${columns}) ${recursive}select ${rows} from ${series}`).execute(handle.db);
    await sql
      .raw(
        `insert into assets (id, client_id, kind, name, mime_type, bytes, sha256, width, height, duration_seconds, source, source_url, job_id, storage_key, created_at_us)
         select 'asset_' || substr(id, 5), client_id, 'image', 'out.png', 'image/png', 100000 + length(id), '${'0'.repeat(64)}', 1024, 1024, null, 'output', null, id, 'k/' || id, created_at_us + 1
         from jobs where status = 'succeeded' and created_at_us % 10000000 < 1000000`,
      )
      .execute(handle.db);
    const insertMs = performance.now() - t0;
    const t1 = performance.now();
    await backfillUsage(handle.db);
    const backfillMs = performance.now() - t1;
    if (handle.dialect === 'postgres') await sql`vacuum analyze`.execute(handle.db);
    return { insertMs, backfillMs };
  } finally {
    await handle.close();
  }
}

/** The usage query of before the roll-up (console/queries/usage.ts until migration 0007), 30 days, every client. */
async function oldUsageQuery(store: Store): Promise<number> {
  const handle = await openStore(store);
  try {
    const DAY_US = 86_400_000_000;
    const toDay = Math.floor(Date.now() / DAY_MS);
    const fromUs = (toDay - 29) * DAY_US;
    const toUs = (toDay + 1) * DAY_US;
    const count = (status: string) => sql`sum(case when j.status = ${status} then 1 else 0 end)`;
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      await sql`
        select j.client_id, j.capability, j.engine, j.created_at_us / ${sql.lit(DAY_US)} as day, count(*) as jobs,
          ${count('succeeded')} as succeeded, ${count('failed')} as failed, ${count('expired')} as expired, ${count('cancelled')} as cancelled,
          coalesce(sum(o.bytes), 0) as output_bytes
        from jobs j
        left join (select job_id, sum(bytes) as bytes from assets where source = 'output' and job_id is not null and created_at_us >= ${fromUs - DAY_US} group by job_id) o on o.job_id = j.id
        where j.created_at_us >= ${fromUs} and j.created_at_us < ${toUs}
        group by j.client_id, j.capability, j.engine, j.created_at_us / ${sql.lit(DAY_US)}`.execute(handle.db);
      times.push(performance.now() - t0);
    }
    return percentile(times, 50);
  } finally {
    await handle.close();
  }
}

async function rollupQuery(store: Store): Promise<number> {
  const handle = await openStore(store);
  try {
    const toDay = Math.floor(Date.now() / DAY_MS);
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      await handle.db
        .selectFrom('usage_daily')
        .selectAll()
        .where('day', '>=', toDay - 29)
        .where('day', '<=', toDay)
        .execute();
      times.push(performance.now() - t0);
    }
    return percentile(times, 50);
  } finally {
    await handle.close();
  }
}

function get(url: string, agent: http.Agent, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent, headers }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

interface Phase {
  api: number[];
  apiErrors: number;
  console: number[];
  consoleStatuses: Map<number, number>;
}

/**
 * The console tabs: their own process (plain JavaScript), so that reading their large answers
 * never delays the probe in this one. Prints `{ latencies, statuses }` as JSON when done.
 */
const TABS_SOURCE = `
const http = require('node:http');
const [url, cookie, pathsJson, tabsText, msText] = process.argv.slice(1);
const paths = JSON.parse(pathsJson);
const end = Date.now() + Number(msText);
const latencies = [];
const statuses = {};
const get = (p, agent) => new Promise((resolve, reject) => {
  http.get(url + p, { agent, headers: { cookie } }, (res) => {
    res.resume();
    res.on('end', () => resolve(res.statusCode));
    res.on('error', reject);
  }).on('error', reject);
});
const tab = async (n) => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  for (let i = n; Date.now() < end; i++) {
    const t0 = performance.now();
    const status = await get(paths[i % paths.length], agent);
    latencies.push(performance.now() - t0);
    statuses[status] = (statuses[status] || 0) + 1;
  }
  agent.destroy();
};
Promise.all(Array.from({ length: Number(tabsText) }, (_, i) => tab(i))).then(() => console.log(JSON.stringify({ latencies, statuses })));
`;

function runTabs(url: string, cookie: string, paths: string[], tabs: number): Promise<{ latencies: number[]; statuses: Record<string, number> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', TABS_SOURCE, url, cookie, JSON.stringify(paths), String(tabs), String(PHASE_MS)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d;
    });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`console tabs exited with ${code}`))));
  });
}

/** The API probe for PHASE_MS, with `tabs` console tabs (another process) cycling through `paths` meanwhile. */
async function phase(url: string, jobId: string, cookie: string, paths: string[], tabs: number): Promise<Phase> {
  const out: Phase = { api: [], apiErrors: 0, console: [], consoleStatuses: new Map() };
  const tabsRun = tabs > 0 ? runTabs(url, cookie, paths, tabs) : Promise.resolve({ latencies: [], statuses: {} });
  const end = Date.now() + PHASE_MS;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  while (Date.now() < end) {
    const t0 = performance.now();
    const status = await get(`${url}/api/v1/jobs/${jobId}`, agent, authHeaders);
    out.api.push(performance.now() - t0);
    if (status !== 200) out.apiErrors++;
  }
  agent.destroy();
  const tabsDone = await tabsRun;
  out.console = tabsDone.latencies;
  out.consoleStatuses = new Map(Object.entries(tabsDone.statuses).map(([k, v]) => [Number(k), v]));
  return out;
}

const merge = (phases: Phase[]): Phase => ({
  api: phases.flatMap((p) => p.api),
  apiErrors: phases.reduce((n, p) => n + p.apiErrors, 0),
  console: phases.flatMap((p) => p.console),
  consoleStatuses: phases.reduce((m, p) => {
    for (const [s, n] of p.consoleStatuses) m.set(s, (m.get(s) ?? 0) + n);
    return m;
  }, new Map<number, number>()),
});

const statuses = (p: Phase) => [...p.consoleStatuses].map(([s, n]) => `${n}× ${s}`).join(', ');

export default async function consoleLoad(): Promise<Row[]> {
  const store = freshStore();
  const { insertMs, backfillMs } = await seed(store);
  const [oldMs, newMs] = [await oldUsageQuery(store), await rollupQuery(store)];

  const handle = await openStore(store);
  const { cookie } = await forgedSessionCookie(handle, 'admin');
  const someJob = await handle.db.selectFrom('jobs').select('id').limit(1).executeTakeFirstOrThrow();
  await handle.close();
  const plans = await consolePlans(store, currentBackend(), someJob.id);
  const zhinian = await startZhinianServer(store, { ZHINIAN_SESSION_SECRET: TEST_SESSION_SECRET, ...FORGED_ROLE_ENV });
  try {
    const created = await fetch(`${zhinian.url}/api/v1/jobs`, {
      method: 'POST',
      headers: { ...authHeaders, 'content-type': 'application/json' },
      body: JSON.stringify({ capability: 'image.generate', prompt: 'a red fox in the snow', width: 64, height: 64 }),
    });
    const { job } = (await created.json()) as { job?: { id: string } };
    if (!job) throw new Error(`could not create a job: HTTP ${created.status}`);
    const screens = ['/admin/api/usage', '/admin/usage', '/admin/clients'];
    for (const p of [...screens, '/admin?range=7d']) {
      const status = await get(`${zhinian.url}${p}`, new http.Agent(), { cookie });
      if (status !== 200) throw new Error(`${p}: HTTP ${status}`);
    }
    // Warm-up, then alternating phases.
    await phase(zhinian.url, job.id, cookie, screens, 2);
    const idle: Phase[] = [];
    const load: Phase[] = [];
    for (let round = 0; round < 2; round++) {
      idle.push(await phase(zhinian.url, job.id, cookie, [], 0));
      load.push(await phase(zhinian.url, job.id, cookie, screens, TABS));
    }
    const api = await phase(zhinian.url, job.id, cookie, ['/admin/api/usage'], TABS);
    const overview = await phase(zhinian.url, job.id, cookie, ['/admin?range=7d'], TABS);
    const i = merge(idle);
    const label = `console: GET /api/v1/jobs/:id, ${JOBS.toLocaleString('en')} jobs`;
    const p = (ph: Phase, q: number) => percentile(ph.api, q);
    const underLoad = (name: string, ph: Phase, seconds: number): Row[] => [
      info(`${label}, p50 ms, ${TABS} tabs on ${name} (base: no console load)`, fmt(p(ph, 50), 2), fmt(p(i, 50), 2), ratioOf(p(ph, 50), p(i, 50))),
      judged(
        `${label}, p99 ms, ${TABS} tabs on ${name} (base: no console load)`,
        fmt(p(ph, 99), 2),
        fmt(p(i, 99), 2),
        ratioOf(p(ph, 99), p(i, 99)),
        '≤ 50 ms, no error',
        ph.apiErrors === 0 && p(ph, 99) <= 50,
      ),
      info(`${label}, max ms, ${TABS} tabs on ${name} (base: no console load)`, fmt(Math.max(...ph.api), 1), fmt(Math.max(...i.api), 1)),
      info(
        `console: ${name} answered /s; p50 / p99 ms (${statuses(ph)})`,
        fmt(ph.console.length / seconds, 1),
        `${fmt(percentile(ph.console, 50))} / ${fmt(percentile(ph.console, 99))}`,
      ),
    ];
    const rows: Row[] = [
      info(
        `console: queries that may read all of jobs (EXPLAIN in the notes; they run in the reader, with the time limit)`,
        plans.fullScans.length === 0 ? 'none' : plans.fullScans.join('; '),
        '',
      ),
      info(`console: insert ${JOBS.toLocaleString('en')} jobs (+ outputs) s / back-fill the roll-up s`, `${fmt(insertMs / 1000)} / ${fmt(backfillMs / 1000)}`, ''),
      info('console: usage query, 30 days, every client, ms (base: the scan of before the roll-up)', fmt(newMs, 1), fmt(oldMs, 0), ratioOf(newMs, oldMs)),
      ...underLoad('GET /admin/api/usage', api, PHASE_MS / 1000),
      ...underLoad('the usage, clients screens and API', merge(load), (2 * PHASE_MS) / 1000),
      ...underLoad('the 7-day overview', overview, PHASE_MS / 1000),
    ];
    addNote(
      `### console (${currentBackend()})\n\nAPI probe requests: idle ${i.api.length}, under GET /admin/api/usage ${api.api.length}, under the screens ${merge(load).api.length}, ` +
        `under the overview ${overview.api.length}; API errors: ${api.apiErrors + merge(load).apiErrors + overview.apiErrors}.\n\n` +
        `#### The console's queries at ${JOBS.toLocaleString('en')} jobs\n\n${plans.markdown}`,
    );
    return rows;
  } finally {
    await zhinian.stop();
  }
}
