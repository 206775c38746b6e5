/**
 * The plans of the console's queries (src/console/queries/*.ts) over the `console` scenario's
 * data. The queries are the console's own: each query function runs against a Kysely that
 * records the compiled statements (and answers no rows), then every statement is EXPLAINed on
 * the real database (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN). A plan that reads all of
 * `jobs` (SCAN jobs / Seq Scan on jobs) is marked: those are the queries the console's time
 * limit is for.
 */
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import {
  type CompiledQuery,
  type DatabaseConnection,
  Kysely,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
} from 'kysely';
import { listAssets } from '../src/console/queries/assets.ts';
import { listAudit } from '../src/console/queries/audit.ts';
import { engineViews } from '../src/console/queries/engines.ts';
import { jobDetail, listJobs } from '../src/console/queries/jobs.ts';
import { overview } from '../src/console/queries/overview.ts';
import { usageJson, usageRows, usageSummary, usageTotalsByClient } from '../src/console/queries/usage.ts';
import { failingEndpoints, listDeliveries } from '../src/console/queries/webhooks.ts';
import type { Database, DbHandle } from '../src/db/index.ts';
import type { EngineRegistry } from '../src/engines/registry.ts';
import { createClientDirectory } from '../src/clients/index.ts';
import { createJobPresenter } from '../src/jobs/index.ts';
import { systemClock } from '../src/lib/clock.ts';
import { openStore, type Store } from './lib.ts';

/** A DbHandle whose queries are recorded, not run (PostgreSQL's code path: one transaction per call). */
function recorder(dialect: 'sqlite' | 'postgres') {
  const compiled: { label: string; query: CompiledQuery }[] = [];
  let label = '';
  const connection: DatabaseConnection = {
    async executeQuery(query) {
      if (!/^\s*(set|begin|commit|rollback)\b/i.test(query.sql)) compiled.push({ label, query });
      return { rows: [] };
    },
    streamQuery() {
      throw new Error('not recorded');
    },
  };
  const db = new Kysely<Database>({
    dialect: {
      createAdapter: () => (dialect === 'postgres' ? new PostgresAdapter() : new SqliteAdapter()),
      createDriver: () => ({
        init: async () => {},
        acquireConnection: async () => connection,
        beginTransaction: async () => {},
        commitTransaction: async () => {},
        rollbackTransaction: async () => {},
        releaseConnection: async () => {},
        destroy: async () => {},
      }),
      createQueryCompiler: () => (dialect === 'postgres' ? new PostgresQueryCompiler() : new SqliteQueryCompiler()),
      createIntrospector: (k) => (dialect === 'postgres' ? new PostgresIntrospector(k) : new SqliteIntrospector(k)),
    },
  });
  // Declared PostgreSQL so that readConsole runs the calls on this Kysely (not in a reader process).
  const handle: DbHandle = { db, dialect: 'postgres', close: () => db.destroy() };
  return {
    handle,
    compiled,
    async record(name: string, fn: (h: DbHandle) => Promise<unknown>) {
      label = name;
      await fn(handle);
    },
  };
}

const registry = {
  all: () => ['local', 'jimeng', 'seedance'].map((name) => ({ name, capabilities: ['image.generate'], run: async () => [] })),
  get: () => undefined,
} as unknown as EngineRegistry;

/** Job rows as the console shows them, with the client settings of `handle`'s database. */
const presenter = (handle: DbHandle) =>
  createJobPresenter({
    engines: registry,
    clients: createClientDirectory(handle, { maxRunning: 0, rateLimitJobsPerMinute: 0, rateLimitRequestsPerMinute: 0 }),
    clock: systemClock,
    maxAttempts: 3,
  });

/** Markdown: every console statement with its plan; and how many read all of `jobs`. */
export async function consolePlans(store: Store, dialect: 'sqlite' | 'postgres', jobId: string): Promise<{ markdown: string; fullScans: string[] }> {
  const rec = recorder(dialect);
  const now = Date.now();
  const day = Math.floor(now / 86_400_000);
  const month = { fromDay: day - 29, toDay: day };
  await rec.record('overview 24h', (h) => overview(h, '24h', now));
  await rec.record('overview 7d', (h) => overview(h, '7d', now));
  await rec.record('engines', (h) => engineViews(h, registry, now));
  await rec.record('jobs list, no filter', (h) => listJobs(h, presenter(h), {}));
  await rec.record('jobs list, status=expired & engine=local', (h) => listJobs(h, presenter(h), { status: 'expired', engine: 'local' }));
  await rec.record('jobs list, client-7, status=failed', (h) => listJobs(h, presenter(h), { clientId: 'client-7', status: 'failed' }));
  await rec.record('jobs list, capability=video.generate & engine=jimeng, from 3 days ago', (h) =>
    listJobs(h, presenter(h), { capability: 'video.generate', engine: 'jimeng', from: now - 3 * 86_400_000 }),
  );
  await rec.record('job detail', (h) => jobDetail(h, presenter(h), jobId, now));
  await rec.record('usage rows, 30 days', (h) => usageRows(h, month));
  // Recorded on the PostgreSQL code path, usageJson writes PostgreSQL's JSON functions; on SQLite it reads the same range as the rows.
  if (dialect === 'postgres') await rec.record('usage JSON, 30 days', (h) => usageJson(h, month));
  await rec.record('usage page, 30 days', (h) => usageSummary(h, month, 500));
  await rec.record('clients: 7-day totals', (h) => usageTotalsByClient(h, { fromDay: day - 6, toDay: day }));
  await rec.record('assets list', (h) => listAssets(h, {}));
  await rec.record('deliveries list', (h) => listDeliveries(h, { limit: 50 }, now));
  await rec.record('failing endpoints', (h) => failingEndpoints(h, now));
  await rec.record('audit', (h) => listAudit(h, { limit: 50 }));

  const explain = await explainer(store, dialect);
  const lines: string[] = [];
  const fullScans: string[] = [];
  try {
    for (const { label, query } of rec.compiled) {
      const plan = await explain(query);
      // A walk with no condition that a LIMIT ends (the newest page) reads only that page.
      const limitedWalk = !/\bwhere\b/i.test(query.sql) && /\blimit\b/i.test(query.sql);
      const full = !limitedWalk && readsAllJobs(plan, dialect);
      if (full) fullScans.push(label);
      lines.push(
        `**${label}**${full ? ' — may read all of `jobs` (or all of one of its indexes)' : ''}\n\n\`\`\`sql\n${query.sql.replace(/\s+/g, ' ').slice(0, 600)}\n\`\`\`\n\n\`\`\`\n${plan}\n\`\`\``,
      );
    }
  } finally {
    await explain.close();
  }
  return { markdown: lines.join('\n\n'), fullScans: [...new Set(fullScans)] };
}

/**
 * SQLite: `SCAN` (a whole table or index, unless a LIMIT ends it first; a range is `SEARCH`).
 * PostgreSQL: a Seq Scan on jobs, or an index of it walked with a filter and no index
 * condition (a sparse filter reads it all before the LIMIT is met).
 */
function readsAllJobs(plan: string, dialect: 'sqlite' | 'postgres'): boolean {
  if (dialect === 'sqlite') return /\bSCAN (jobs|j)\b/.test(plan);
  const nodes = plan.split(/\n(?=\s*->)/);
  return nodes.some((node) => {
    const head = node.split('\n')[0];
    return / on jobs\b/.test(head) && (/Seq Scan/.test(head) || (/Filter:/.test(node) && !/(Index|Recheck) Cond/.test(node)));
  });
}

async function explainer(store: Store, dialect: 'sqlite' | 'postgres') {
  if (dialect === 'sqlite') {
    const file = new SqliteDatabase(path.join(store.dataDir, 'zhinian.db'), { readonly: true });
    return Object.assign(
      async (query: CompiledQuery) =>
        file
          .prepare(`explain query plan ${query.sql}`)
          .all(...(query.parameters as unknown[]))
          .map((r) => (r as { detail: string }).detail)
          .join('\n'),
      { close: async () => file.close() },
    );
  }
  const handle = await openStore(store);
  return Object.assign(
    async (query: CompiledQuery) => {
      const { rows } = await handle.db.executeQuery<{ 'QUERY PLAN': string }>({ ...query, sql: `explain ${query.sql}` });
      return rows.map((r) => r['QUERY PLAN']).join('\n');
    },
    { close: () => handle.close() },
  );
}
