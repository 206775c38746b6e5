/**
 * Scenario `list`: GET /api/v1/jobs for a client with 1,000,000 jobs (BENCH_LIST_JOBS).
 *
 * The jobs are written straight into the database in one statement (PostgreSQL:
 * `insert … select … from generate_series`, then VACUUM ANALYZE as autovacuum would soon do;
 * SQLite: a recursive CTE in one transaction, no ANALYZE as the app runs none), in the row
 * shape of the migrations and of a job made by the job service: ids `job_<26 chars>`, sort keys
 * created_at_us unique and increasing (1 ms apart), statuses succeeded / failed (every 20th) /
 * cancelled (every 50th), capabilities image.generate / image.upscale (every 8th) /
 * video.generate (every 25th), terminal rows with run_at null.
 *
 * Then a Zhinian API server (dist/, own process) answers sequential keep-alive GETs — one at a
 * time, so the figures are the request's own latency, not queueing — for the first page and for
 * a deep page (`before` = the cursor of the 900,000th newest job), unfiltered and with
 * status=succeeded / status=failed / capability=image.upscale: 1,000 requests each, in 5
 * interleaved rounds after a warm-up. Baseline: the same loop against a bare Fastify route.
 * Target: p99 ≤ 10 ms.
 *
 * The queries are the service's own: jobs.list() runs on a Kysely instance that records the
 * compiled SQL and parameters, and those are EXPLAINed (PostgreSQL: EXPLAIN (ANALYZE, BUFFERS);
 * SQLite: EXPLAIN QUERY PLAN). A plan passes when it reads one of the jobs_client_* indexes in
 * created_at_us order: no Seq Scan / SCAN jobs, no Sort / temp B-tree. The plans go into the
 * report's notes.
 */
import http from 'node:http';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { CompiledQuery, Kysely, PostgresDialect, SqliteDialect, sql, type LogEvent } from 'kysely';
import { findAssetKinds } from '../src/assets/index.ts';
import { connectPostgres } from '../src/db/postgres.ts';
import type { Database } from '../src/db/schema.ts';
import { createEngineRegistry } from '../src/engines/registry.ts';
import { createClientDirectory } from '../src/clients/index.ts';
import { createJobService } from '../src/jobs/index.ts';
import { systemClock } from '../src/lib/clock.ts';
import { formatCursor } from '../src/lib/cursor.ts';
import { createNotifier } from '../src/lib/notifier.ts';
import {
  addNote,
  authHeaders,
  CLIENT_ID,
  currentBackend,
  fmt,
  freshStore,
  info,
  instantEngine,
  judged,
  openStore,
  percentile,
  ratioOf,
  startBaseline,
  startZhinianServer,
  type Row,
  type Store,
} from './lib.ts';

const JOBS = Number(process.env.BENCH_LIST_JOBS ?? 1_000_000);
const DEEP = Math.min(900_000, Math.floor(JOBS * 0.9));
const WARMUP = 100;
const REQUESTS = 1000;
const ROUNDS = 5;
const MAX_P99_MS = 10;
const PROMPT = 'a red fox in the snow';
const PARAMS = JSON.stringify({ width: 1024, height: 1024 });

/** The columns of `jobs` (migrations 0001 + 0002) and the SQL making row n (1 = oldest). */
function rowSql(n: string, pad: string, baseUs: number): string {
  const ms = `(${baseUs / 1000} + ${n})`;
  return `
    'job_' || ${pad},
    '${CLIENT_ID}',
    case when ${n} % 8 = 4 then 'image.upscale' when ${n} % 25 = 11 then 'video.generate' else 'image.generate' end,
    case when ${n} % 20 = 0 then 'failed' when ${n} % 50 = 7 then 'cancelled' else 'succeeded' end,
    '${PROMPT}',
    '${PARAMS}',
    '[]',
    case when ${n} % 20 = 0 or ${n} % 50 = 7 then '[]' else '["asset_' || ${pad} || '"]' end,
    case when ${n} % 20 = 0 then 'engine_error' end,
    case when ${n} % 20 = 0 then 'The engine failed.' end,
    case when ${n} % 20 = 0 or ${n} % 50 = 7 then null else 100 end,
    'local', null, null,
    ${ms} * 1000,
    ${ms} + 5000, ${ms} + 100, ${ms} + 5000,
    1, null, null, null, 0`;
}

const COLUMNS =
  'id, client_id, capability, status, prompt, params, input_asset_ids, output_asset_ids, error_code, error_message, progress, engine, webhook_url, metadata, ' +
  'created_at_us, updated_at, started_at, finished_at, attempts, run_at, lease_owner, engine_state, engine_pinned';

async function insertJobs(store: Store): Promise<{ insertMs: number; analyzeMs: number }> {
  const handle = await openStore(store);
  try {
    // Oldest job a little over JOBS ms ago, on a whole millisecond.
    const baseUs = (Date.now() - JOBS - 60_000) * 1000;
    const t0 = performance.now();
    if (handle.dialect === 'postgres') {
      await sql.raw(`insert into jobs (${COLUMNS}) select ${rowSql('g', `lpad(g::text, 26, '0')`, baseUs)} from generate_series(1, ${JOBS}) as g`).execute(handle.db);
    } else {
      await sql
        .raw(
          `insert into jobs (${COLUMNS}) with recursive s(g) as (select 1 union all select g + 1 from s where g < ${JOBS}) ` +
            `select ${rowSql('g', `printf('%026d', g)`, baseUs)} from s`,
        )
        .execute(handle.db);
    }
    const insertMs = performance.now() - t0;
    const t1 = performance.now();
    if (handle.dialect === 'postgres') await sql`vacuum analyze jobs`.execute(handle.db);
    return { insertMs, analyzeMs: performance.now() - t1 };
  } finally {
    await handle.close();
  }
}

interface Variant {
  label: string;
  query: Record<string, string>;
  /** Measured over HTTP (the others are EXPLAINed only). */
  http: boolean;
}

/** jobs.list() on a Kysely that records the compiled statements; returns the one list query. */
async function listQuery(store: Store, query: Record<string, string>): Promise<{ compiled: CompiledQuery; explain: () => Promise<string> }> {
  const captured: CompiledQuery[] = [];
  const log = (event: LogEvent) => {
    if (event.level === 'query') captured.push(event.query);
  };
  let db: Kysely<Database>;
  let close: () => Promise<void>;
  if (store.databaseUrl) {
    const { pool } = connectPostgres({ url: store.databaseUrl, poolMax: 1, onError: () => {} });
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }), log });
    close = () => db.destroy();
  } else {
    const file = new SqliteDatabase(path.join(store.dataDir, 'zhinian.db'));
    db = new Kysely<Database>({ dialect: new SqliteDialect({ database: file }), log });
    close = () => db.destroy();
  }
  const dialect = store.databaseUrl ? 'postgres' : 'sqlite';
  const jobs = createJobService({
    maxAttempts: 3,
    handle: { db, dialect, close },
    engines: createEngineRegistry([instantEngine()]),
    assetKinds: (clientId, ids) => findAssetKinds(db, clientId, ids),
    notifier: createNotifier(),
    clock: systemClock,
    allowPrivateUrls: false,
    clients: createClientDirectory({ db, dialect, close }, { maxRunning: 0, rateLimitJobsPerMinute: 0, rateLimitRequestsPerMinute: 0 }),
  });
  const page = await jobs.list(CLIENT_ID, query).catch(async (error) => {
    await close();
    throw error;
  });
  if (page.jobs.length !== Number(query.limit)) throw new Error(`list ${JSON.stringify(query)} returned ${page.jobs.length} jobs`);
  if (captured.length !== 1) throw new Error(`jobs.list ran ${captured.length} statements, expected 1`);
  const compiled = captured[0];
  return {
    compiled,
    async explain() {
      try {
        const prefix = dialect === 'postgres' ? 'explain (analyze, buffers) ' : 'explain query plan ';
        const { rows } = await db.executeQuery<Record<string, unknown>>(CompiledQuery.raw(prefix + compiled.sql, [...compiled.parameters]));
        return dialect === 'postgres' ? rows.map((r) => String(r['QUERY PLAN'])).join('\n') : rows.map((r) => `${'  '.repeat(depth(rows, r))}${String(r.detail)}`).join('\n');
      } finally {
        await close();
      }
    },
  };
}

/** Nesting of an EXPLAIN QUERY PLAN row (rows carry id and parent). */
function depth(rows: Record<string, unknown>[], row: Record<string, unknown>): number {
  let d = 0;
  for (let parent = row.parent; parent; d++) parent = rows.find((r) => r.id === parent)?.parent;
  return d;
}

/** Index used in created_at_us order, no full scan, no sort: returns the problems (none = pass). */
function planProblems(plan: string): { index: string | null; problems: string[] } {
  const problems: string[] = [];
  if (currentBackend() === 'postgres') {
    const index = /Index (?:Only )?Scan(?: Backward)? using (\w+) on jobs/.exec(plan)?.[1] ?? null;
    if (!index?.startsWith('jobs_client_')) problems.push('no Index Scan on a jobs_client_* index');
    if (/Seq Scan/.test(plan)) problems.push('Seq Scan');
    if (/\bSort\b/.test(plan)) problems.push('Sort');
    if (/Bitmap/.test(plan)) problems.push('Bitmap scan (needs a sort)');
    return { index, problems };
  }
  const index = /SEARCH jobs USING (?:COVERING )?INDEX (\w+)/.exec(plan)?.[1] ?? null;
  if (!index?.startsWith('jobs_client_')) problems.push('no SEARCH … USING INDEX jobs_client_*');
  if (/\bSCAN jobs\b/.test(plan)) problems.push('SCAN jobs');
  if (/TEMP B-TREE/.test(plan)) problems.push('temp B-tree (sort)');
  return { index, problems };
}

const fail = (message: string): never => {
  throw new Error(message);
};

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent, headers: authHeaders }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

/** `count` sequential GETs: their latencies in ms; checks every answer. */
async function timeGets(url: string, count: number, check: (status: number, body: string) => void, out: number[] = []): Promise<number[]> {
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const { status, body } = await get(url);
    const ms = performance.now() - t0;
    check(status, body);
    out.push(ms);
  }
  return out;
}

export default async function list(): Promise<Row[]> {
  const store = freshStore();
  const { insertMs, analyzeMs } = await insertJobs(store);

  const handle = await openStore(store);
  const deep = await handle.db
    .selectFrom('jobs')
    .select('created_at_us')
    .where('client_id', '=', CLIENT_ID)
    .orderBy('created_at_us', 'desc')
    .offset(DEEP - 1)
    .limit(1)
    .executeTakeFirstOrThrow();
  await handle.close();
  const before = formatCursor(Number(deep.created_at_us));

  const variants: Variant[] = [
    { label: 'first page', query: { limit: '20' }, http: true },
    { label: `deep page (before = job #${DEEP.toLocaleString('en')})`, query: { limit: '20', before }, http: true },
    { label: 'status=succeeded, first page', query: { limit: '20', status: 'succeeded' }, http: true },
    { label: 'status=succeeded, deep page', query: { limit: '20', status: 'succeeded', before }, http: true },
    { label: 'status=failed, deep page', query: { limit: '20', status: 'failed', before }, http: true },
    { label: 'capability=image.upscale, first page', query: { limit: '20', capability: 'image.upscale' }, http: true },
    { label: 'capability=image.upscale, deep page', query: { limit: '20', capability: 'image.upscale', before }, http: true },
    { label: 'status=failed & capability=image.upscale, deep page', query: { limit: '20', status: 'failed', capability: 'image.upscale', before }, http: false },
  ];

  const rows: Row[] = [
    info(
      `list: insert ${JOBS.toLocaleString('en')} jobs of one client, s${currentBackend() === 'postgres' ? ' (+ VACUUM ANALYZE)' : ''}`,
      `${fmt(insertMs / 1000)}${currentBackend() === 'postgres' ? ` (+ ${fmt(analyzeMs / 1000)})` : ''}`,
      '',
    ),
  ];

  // EXPLAIN before the HTTP runs: the first execution of each plan shows cold-ish buffers.
  const plans: string[] = [];
  for (const v of variants) {
    const q = await listQuery(store, v.query);
    const plan = await q.explain();
    const { index, problems } = planProblems(plan);
    rows.push(judged(`list plan: ${v.label}`, index ?? '—', '', '', 'index, no scan/sort', problems.length === 0));
    if (problems.length > 0) rows[rows.length - 1].zhinian += ` (${problems.join(', ')})`;
    plans.push(
      [
        `**${v.label}** — \`GET /api/v1/jobs?${new URLSearchParams(v.query)}\``,
        '',
        '```sql',
        `${q.compiled.sql}`,
        `-- parameters: ${JSON.stringify(q.compiled.parameters)}`,
        '```',
        '```',
        plan,
        '```',
      ].join('\n'),
    );
  }
  addNote(
    [
      `### list: query plans (${currentBackend() === 'postgres' ? 'PostgreSQL, EXPLAIN (ANALYZE, BUFFERS)' : 'SQLite, EXPLAIN QUERY PLAN'}, ${JOBS.toLocaleString('en')} jobs of one client)`,
      '',
      'The statements are the ones jobs.list() compiles (captured from its Kysely instance); GET /api/v1/jobs runs no other query (authentication is in memory).',
      '',
      ...plans.flatMap((p) => [p, '']),
    ].join('\n'),
  );

  const zhinian = await startZhinianServer(store);
  const bare = await startBaseline('fastify');
  try {
    const targets = [
      { label: 'bare route', url: `${bare.url}/x`, check: (status: number) => void (status === 200 || fail(`baseline answered ${status}`)) },
      ...variants
        .filter((v) => v.http)
        .map((v) => {
          const url = `${zhinian.url}/api/v1/jobs?${new URLSearchParams(v.query)}`;
          return {
            label: v.label,
            url,
            check(status: number, body: string) {
              if (status !== 200) fail(`GET ${url}: HTTP ${status} ${body.slice(0, 200)}`);
              const page = JSON.parse(body) as { jobs: unknown[]; nextBefore: string | null };
              if (page.jobs.length !== 20 || !page.nextBefore) fail(`GET ${url}: ${page.jobs.length} jobs, nextBefore ${page.nextBefore}`);
            },
          };
        }),
    ];
    // Warm-up (JIT, caches), then ROUNDS passes over every target in turn so that a noisy
    // neighbour hits all of them alike; each target's latencies are pooled.
    for (const t of targets) await timeGets(t.url, WARMUP, t.check);
    const samples = targets.map(() => [] as number[]);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [i, t] of targets.entries()) await timeGets(t.url, REQUESTS / ROUNDS, t.check, samples[i]);
    }
    const b50 = percentile(samples[0], 50);
    const b99 = percentile(samples[0], 99);
    for (const [i, t] of targets.entries()) {
      if (i === 0) continue;
      const p50 = percentile(samples[i], 50);
      const p99 = percentile(samples[i], 99);
      rows.push(
        info(`list p50 ms, ${t.label} (base: bare route)`, fmt(p50, 2), fmt(b50, 2), ratioOf(p50, b50)),
        judged(`list p99 ms, ${t.label} (base: bare route)`, fmt(p99, 2), fmt(b99, 2), ratioOf(p99, b99), `≤ ${MAX_P99_MS} ms`, p99 <= MAX_P99_MS),
      );
    }
  } finally {
    agent.destroy();
    await Promise.all([zhinian.stop(), bare.stop()]);
  }
  return rows;
}
