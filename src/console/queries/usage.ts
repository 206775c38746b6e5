import type { Db, DbHandle } from '../../db/index.ts';
import { type RawBuilder, sql } from 'kysely';
import { Invalid } from '../../lib/errors.ts';
import { readConsole } from './reader.ts';

/** One client × capability × engine × UTC day of jobs (created that day, ended since), by outcome. */
export interface UsageRow {
  /** `YYYY-MM-DD`, UTC. */
  day: string;
  clientId: string;
  capability: string;
  engine: string;
  jobs: number;
  succeeded: number;
  failed: number;
  expired: number;
  cancelled: number;
  /** Bytes of the outputs (assets with source `output`) of those jobs. */
  outputBytes: number;
}

export interface UsageFilter {
  /** First day (UTC day number: days since 1970-01-01), inclusive. */
  fromDay: number;
  /** Last day, inclusive. */
  toDay: number;
  clientId?: string;
}

const DAY_MS = 86_400_000;
/** The longest range one request may ask for, in days. */
const MAX_USAGE_DAYS = 366;
/** Without `from`: this many days up to and including `to`. */
const DEFAULT_USAGE_DAYS = 30;

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/** `YYYY-MM-DD` as a UTC day number; null when it is no real date. */
function dayNumber(value: string): number | null {
  const m = DATE.exec(value);
  if (!m) return null;
  const ms = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  if (!Number.isFinite(ms) || new Date(ms).toISOString().slice(0, 10) !== value) return null;
  return Math.floor(ms / DAY_MS);
}

/** A UTC day number as `YYYY-MM-DD`. */
export const dayString = (day: number): string => new Date(day * DAY_MS).toISOString().slice(0, 10);

/**
 * The query parameters `from`, `to` (`YYYY-MM-DD`, inclusive, UTC) and `clientId` as a filter.
 * Defaults: `to` today, `from` 29 days before `to`. Throws Invalid naming the parameter.
 */
export function parseUsageFilter(query: unknown, now: number): UsageFilter {
  const q = (query ?? {}) as Record<string, unknown>;
  for (const key of Object.keys(q)) {
    if (!['from', 'to', 'clientId', 'lang'].includes(key)) throw new Invalid(null, `unknown query parameter: ${key}`);
  }
  const read = (name: 'from' | 'to'): number | undefined => {
    const v = q[name];
    if (v === undefined || v === '') return undefined;
    const day = typeof v === 'string' ? dayNumber(v) : null;
    if (day === null) throw new Invalid(name, 'must be a date YYYY-MM-DD');
    return day;
  };
  const toDay = read('to') ?? Math.floor(now / DAY_MS);
  const fromDay = read('from') ?? toDay - (DEFAULT_USAGE_DAYS - 1);
  if (fromDay > toDay) throw new Invalid('from', 'must not be after to');
  if (toDay - fromDay + 1 > MAX_USAGE_DAYS) throw new Invalid('from', `the range must be at most ${MAX_USAGE_DAYS} days`);
  const clientId = q.clientId;
  if (clientId !== undefined && clientId !== '' && (typeof clientId !== 'string' || clientId.length > 128)) throw new Invalid('clientId', 'must be a client id');
  return { fromDay, toDay, clientId: typeof clientId === 'string' && clientId !== '' ? clientId : undefined };
}

/** The filter's values as query parameters (for forms and links). */
export const usageQuery = (f: UsageFilter) => ({ from: dayString(f.fromDay), to: dayString(f.toDay), clientId: f.clientId ?? '' });

/**
 * Usage rows, by day, then client, capability and engine, read from the daily roll-up
 * (`usage_daily`, written by queue/usage-rollup.ts in the transaction that ends each job),
 * never from a scan of jobs: a range of its primary key, at most one row per day × client ×
 * capability × engine. A job counts on the UTC day it was created, once it has ended, under the
 * engine it ended on; `jobs` is the sum of the four outcomes (queued and running jobs are on
 * the overview). Counts come back as strings on PostgreSQL.
 */
export async function usageRows(handle: DbHandle, filter: UsageFilter): Promise<UsageRow[]> {
  return readConsole(handle, (db) => rowsIn(db, filter));
}

/** The filter's rows (the first `limit` of them), in order. */
async function rowsIn(db: Db, filter: UsageFilter, limit?: number): Promise<UsageRow[]> {
  let select = db.selectFrom('usage_daily').selectAll().where('day', '>=', filter.fromDay).where('day', '<=', filter.toDay);
  if (filter.clientId !== undefined) select = select.where('client_id', '=', filter.clientId);
  // The primary key's order, so the sort below (code-unit order, whatever the database's
  // collation) has little to do; with a limit, the first rows by the database's order.
  select = select.orderBy('day').orderBy('client_id').orderBy('capability').orderBy('engine');
  const rows = await (limit === undefined ? select : select.limit(limit)).execute();
  return rows
    .map((r) => ({
      day: dayString(Number(r.day)),
      clientId: String(r.client_id),
      capability: String(r.capability),
      engine: String(r.engine),
      jobs: Number(r.jobs),
      succeeded: Number(r.succeeded),
      failed: Number(r.failed),
      expired: Number(r.expired),
      cancelled: Number(r.cancelled),
      outputBytes: Number(r.output_bytes),
    }))
    .sort((a, b) => cmp(a.day, b.day) || cmp(a.clientId, b.clientId) || cmp(a.capability, b.capability) || cmp(a.engine, b.engine));
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The usage rows as the JSON array `GET /admin/api/usage` answers, built by the database (the
 * SQLite reader process, or the PostgreSQL server): the server's main thread only passes the
 * text on, however many rows there are (30 days of 50 clients are ~14,000 rows, 1.5 MB, which
 * would otherwise be parsed, mapped and serialised on the thread that answers /api/v1). The
 * same rows and order as `usageRows` (ids in code-point order).
 */
export async function usageJson(handle: DbHandle, filter: UsageFilter): Promise<string> {
  const client = filter.clientId === undefined ? sql`` : sql`and client_id = ${filter.clientId}`;
  const range = sql`day >= ${filter.fromDay} and day <= ${filter.toDay} ${client}`;
  const fields = (day: RawBuilder<unknown>) =>
    sql`${sql.lit('day')}, ${day}, 'clientId', client_id, 'capability', capability, 'engine', engine, 'jobs', jobs, 'succeeded', succeeded,
      'failed', failed, 'expired', expired, 'cancelled', cancelled, 'outputBytes', output_bytes`;
  const query =
    handle.dialect === 'postgres'
      ? sql<{ rows: string }>`select coalesce(json_agg(json_build_object(${fields(sql`to_char(date '1970-01-01' + day, 'YYYY-MM-DD')`)})
          order by day, client_id collate "C", capability collate "C", engine collate "C"), '[]')::text as rows
          from usage_daily where ${range}`
      : // SQLite aggregates a subquery's rows in its order; the primary key gives that order without sorting.
        sql<{ rows: string }>`select coalesce(json_group_array(json_object(${fields(sql`date(day * 86400, 'unixepoch')`)})), '[]') as rows
          from (select * from usage_daily where ${range} order by day, client_id, capability, engine)`;
  const { rows } = await readConsole(handle, (db) => query.execute(db));
  return rows[0]?.rows ?? '[]';
}

/**
 * Totals per client over the filter's days, summed by the database (one row per client, not
 * one per day × capability × engine): what a list of clients shows beside each.
 */
export function usageTotalsByClient(handle: DbHandle, filter: UsageFilter): Promise<Map<string, UsageTotals>> {
  return readConsole(handle, (db) => totalsIn(db, filter, 'client_id'));
}

async function totalsIn(db: Db, filter: UsageFilter, by: 'client_id' | 'day'): Promise<Map<string, UsageTotals>> {
  let select = db
    .selectFrom('usage_daily')
    .select((eb) => [
      eb.ref(by).as('key'),
      eb.fn.sum<number>('jobs').as('jobs'),
      eb.fn.sum<number>('succeeded').as('succeeded'),
      eb.fn.sum<number>('failed').as('failed'),
      eb.fn.sum<number>('expired').as('expired'),
      eb.fn.sum<number>('cancelled').as('cancelled'),
      eb.fn.sum<number>('output_bytes').as('output_bytes'),
    ])
    .where('day', '>=', filter.fromDay)
    .where('day', '<=', filter.toDay)
    .groupBy(by);
  if (filter.clientId !== undefined) select = select.where('client_id', '=', filter.clientId);
  const rows = await select.execute();
  const out = new Map<string, UsageTotals>();
  for (const r of rows) {
    const key = by === 'day' ? dayString(Number(r.key)) : String(r.key);
    out.set(key, {
      jobs: Number(r.jobs),
      succeeded: Number(r.succeeded),
      failed: Number(r.failed),
      expired: Number(r.expired),
      cancelled: Number(r.cancelled),
      outputBytes: Number(r.output_bytes),
    });
  }
  return new Map([...out].sort(([a], [b]) => cmp(a, b)));
}

/** What the usage page shows: at most `maxRows` rows (and how many there are), totals per client and per day. */
export interface UsageSummary {
  rows: UsageRow[];
  rowCount: number;
  byClient: Map<string, UsageTotals>;
  byDay: Map<string, UsageTotals>;
}

/**
 * The usage page's data, its sums made by the database: the page's work on the main thread
 * stays small however many clients and days the range holds (the full rows are in the CSV).
 */
export function usageSummary(handle: DbHandle, filter: UsageFilter, maxRows: number): Promise<UsageSummary> {
  return readConsole(handle, async (db) => {
    let count = db
      .selectFrom('usage_daily')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('day', '>=', filter.fromDay)
      .where('day', '<=', filter.toDay);
    if (filter.clientId !== undefined) count = count.where('client_id', '=', filter.clientId);
    const rows = await rowsIn(db, filter, maxRows);
    const rowCount = Number((await count.executeTakeFirst())?.n ?? 0);
    return { rows, rowCount, byClient: await totalsIn(db, filter, 'client_id'), byDay: await totalsIn(db, filter, 'day') };
  });
}

export type UsageTotals = Omit<UsageRow, 'day' | 'clientId' | 'capability' | 'engine'>;

const emptyTotals = (): UsageTotals => ({ jobs: 0, succeeded: 0, failed: 0, expired: 0, cancelled: 0, outputBytes: 0 });

function add(into: UsageTotals, row: UsageTotals): void {
  into.jobs += row.jobs;
  into.succeeded += row.succeeded;
  into.failed += row.failed;
  into.expired += row.expired;
  into.cancelled += row.cancelled;
  into.outputBytes += row.outputBytes;
}

/** Totals per key (e.g. per client). */
export function totalsBy(rows: readonly UsageRow[], key: (row: UsageRow) => string): Map<string, UsageTotals> {
  const out = new Map<string, UsageTotals>();
  for (const row of rows) {
    let t = out.get(key(row));
    if (!t) {
      t = emptyTotals();
      out.set(key(row), t);
    }
    add(t, row);
  }
  return out;
}

/** Every day of the filter with its totals (days without jobs too), for the chart; `byDay`: totals per `YYYY-MM-DD`. */
export function perDay(byDay: ReadonlyMap<string, UsageTotals>, filter: UsageFilter): { day: string; totals: UsageTotals }[] {
  const out: { day: string; totals: UsageTotals }[] = [];
  for (let d = filter.fromDay; d <= filter.toDay; d++) out.push({ day: dayString(d), totals: byDay.get(dayString(d)) ?? emptyTotals() });
  return out;
}

const USAGE_COLUMNS = ['day', 'clientId', 'capability', 'engine', 'jobs', 'succeeded', 'failed', 'expired', 'cancelled', 'outputBytes'] as const;

/**
 * One CSV cell (RFC 4180): quoted when it holds a comma, quote or line break. A text starting
 * with = + - @ (or a tab/CR) gets a leading `'` so a spreadsheet never runs it as a formula.
 */
function csvCell(value: string | number): string {
  let s = String(value);
  if (typeof value === 'string' && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** The rows as CSV: a header line, then one line per row, CRLF line ends. */
export function usageCsv(rows: readonly UsageRow[]): string {
  const lines = [USAGE_COLUMNS.join(',')];
  for (const row of rows) lines.push(USAGE_COLUMNS.map((c) => csvCell(row[c])).join(','));
  return `${lines.join('\r\n')}\r\n`;
}
