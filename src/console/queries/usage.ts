import type { DbHandle } from '../../db/index.ts';
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
  const rows = await readConsole(handle, (db) => {
    let select = db.selectFrom('usage_daily').selectAll().where('day', '>=', filter.fromDay).where('day', '<=', filter.toDay);
    if (filter.clientId !== undefined) select = select.where('client_id', '=', filter.clientId);
    return select.execute();
  });
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
