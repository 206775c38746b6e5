import { sql } from 'kysely';
import type { DbHandle } from '../../db/index.ts';
import { Invalid } from '../../lib/errors.ts';

/** One client × capability × engine × UTC day of jobs (created that day), by outcome. */
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
const DAY_US = 86_400_000_000;
/** A literal, not a parameter: PostgreSQL matches the select's day to the group by's only when they are the same expression. */
const DAY_US_SQL = sql.lit(DAY_US);
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
 * Usage rows, by day, then client, capability and engine. One grouped query on both dialects:
 * the day is the integer `created_at_us / 86400000000` (integer division of integers in SQLite
 * and PostgreSQL alike), formatted here; counts come back as strings on PostgreSQL.
 * Output bytes: the outputs of jobs in the range, summed per job first (assets have no index
 * on job_id, so they are read once, from a day before the range on: outputs follow their job).
 */
export async function usageRows(handle: DbHandle, filter: UsageFilter): Promise<UsageRow[]> {
  const fromUs = filter.fromDay * DAY_US;
  const toUs = (filter.toDay + 1) * DAY_US;
  const client = filter.clientId === undefined ? sql`` : sql`and j.client_id = ${filter.clientId}`;
  const count = (status: string) => sql`sum(case when j.status = ${status} then 1 else 0 end)`;
  const { rows } = await sql<Record<string, string | number | null>>`
    select j.client_id as client_id, j.capability as capability, j.engine as engine,
      j.created_at_us / ${DAY_US_SQL} as day,
      count(*) as jobs,
      ${count('succeeded')} as succeeded,
      ${count('failed')} as failed,
      ${count('expired')} as expired,
      ${count('cancelled')} as cancelled,
      coalesce(sum(o.bytes), 0) as output_bytes
    from jobs j
    left join (
      select job_id, sum(bytes) as bytes from assets
      where source = 'output' and job_id is not null and created_at_us >= ${fromUs - DAY_US}
      group by job_id
    ) o on o.job_id = j.id
    where j.created_at_us >= ${fromUs} and j.created_at_us < ${toUs} ${client}
    group by j.client_id, j.capability, j.engine, j.created_at_us / ${DAY_US_SQL}`.execute(handle.db);
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

/** Every day of the filter with its totals (days without jobs too), for the chart. */
export function perDay(rows: readonly UsageRow[], filter: UsageFilter): { day: string; totals: UsageTotals }[] {
  const byDay = totalsBy(rows, (r) => r.day);
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
