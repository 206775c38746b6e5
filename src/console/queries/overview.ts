import { sql } from 'kysely';
import type { DbHandle } from '../../db/index.ts';
import { iso } from '../../lib/clock.ts';
import { readConsole } from './reader.ts';

export type OverviewRange = '24h' | '7d';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** Run-time percentiles are computed in JS from at most this many of the range's latest succeeded jobs. */
export const PERCENTILE_SAMPLE_CAP = 5000;

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';
/**
 * The smallest job id made at or after `ms`: ids are `job_` + the creation time in Crockford
 * base32 (lib/ids.ts), so a time range is a range of the primary key and needs no scan.
 */
function jobIdFloor(ms: number): string {
  let out = '';
  let t = Math.max(0, Math.floor(ms));
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[t % 32] + out;
    t = Math.floor(t / 32);
  }
  return `job_${out}`;
}

export interface Bucket {
  /** Start of the bucket (ISO). */
  start: string;
  total: number;
  failed: number;
}

export interface Overview {
  range: OverviewRange;
  since: string;
  /** Jobs created in the range by status and capability. */
  byStatus: Record<string, number>;
  byCapability: { capability: string; total: number; byStatus: Record<string, number> }[];
  total: number;
  queuedNow: number;
  runningNow: number;
  /** failed + expired over every job of the range that ended (cancelled ones left out); null with none. */
  failureRate: number | null;
  buckets: Bucket[];
  runTimes: { engine: string; count: number; p50Ms: number; p95Ms: number }[];
  /** How many succeeded jobs the percentiles were computed from (capped). */
  runTimeSample: number;
  webhookBacklog: number;
  oldestPendingDelivery: string | null;
  oldestPendingAgeMs: number | null;
}

/** The value at quantile `q` (0–1) of sorted numbers, nearest rank. */
function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/**
 * The overview's numbers. Works the same on SQLite and PostgreSQL (PostgreSQL returns counts
 * and bigint columns as strings: every number goes through Number()). Buckets are UTC hours
 * (24 h) or UTC days (7 d).
 */
export async function overview(handle: DbHandle, range: OverviewRange, now: number): Promise<Overview> {
  return readConsole(handle, async (db) => {
    const size = range === '24h' ? HOUR : DAY;
    const count = range === '24h' ? 24 : 7;
    const firstBucket = Math.floor(now / size) * size - (count - 1) * size;
    const since = firstBucket;
    const floor = jobIdFloor(since);
    const sizeUs = size * 1000;

    // One pass over the range's jobs (a range of the primary key) gives the buckets and the
    // totals by status and capability; grouped by status and capability alone, SQLite would
    // rather walk a whole status index than the range.
    const [bucketRows, live, runs, backlog] = await Promise.all([
      db
        .selectFrom('jobs')
        .select([sql<number>`created_at_us / ${sql.lit(sizeUs)}`.as('bucket'), 'status', 'capability', (eb) => eb.fn.countAll().as('n')])
        .where('id', '>=', floor)
        .groupBy([sql`created_at_us / ${sql.lit(sizeUs)}`, 'status', 'capability'])
        .execute(),
      db
        .selectFrom('jobs')
        .select(['status', (eb) => eb.fn.countAll().as('n')])
        .where('status', 'in', ['queued', 'running'])
        .groupBy('status')
        .execute(),
      db
        .selectFrom('jobs')
        .select(['engine', 'started_at', 'finished_at'])
        .where('id', '>=', floor)
        // `status || ''`: not the status index (every succeeded job, then a sort), but the
        // primary key backwards from now, until the sample is full.
        .where(sql<string>`status || ''`, '=', 'succeeded')
        .where('started_at', 'is not', null)
        .where('finished_at', 'is not', null)
        .orderBy('id', 'desc')
        .limit(PERCENTILE_SAMPLE_CAP)
        .execute(),
      db
        .selectFrom('webhook_deliveries')
        .select([(eb) => eb.fn.countAll().as('n'), (eb) => eb.fn.min('created_at').as('oldest')])
        .where('status', '=', 'pending')
        .executeTakeFirst(),
    ]);

    const byStatus: Record<string, number> = {};
    const caps = new Map<string, { capability: string; total: number; byStatus: Record<string, number> }>();
    let total = 0;
    for (const row of bucketRows) {
      const n = Number(row.n);
      total += n;
      byStatus[row.status] = (byStatus[row.status] ?? 0) + n;
      const cap = caps.get(row.capability) ?? { capability: row.capability, total: 0, byStatus: {} };
      cap.total += n;
      cap.byStatus[row.status] = (cap.byStatus[row.status] ?? 0) + n;
      caps.set(row.capability, cap);
    }
    const bad = (byStatus.failed ?? 0) + (byStatus.expired ?? 0);
    const ended = bad + (byStatus.succeeded ?? 0);

    const buckets: Bucket[] = Array.from({ length: count }, (_, i) => ({ start: iso(firstBucket + i * size) ?? '', total: 0, failed: 0 }));
    for (const row of bucketRows) {
      const i = Math.floor((Number(row.bucket) * size - firstBucket) / size);
      if (i < 0 || i >= count) continue;
      const n = Number(row.n);
      buckets[i].total += n;
      if (row.status === 'failed' || row.status === 'expired') buckets[i].failed += n;
    }

    const perEngine = new Map<string, number[]>();
    for (const r of runs) {
      const ms = Number(r.finished_at) - Number(r.started_at);
      if (!Number.isFinite(ms) || ms < 0) continue;
      const list = perEngine.get(r.engine) ?? [];
      list.push(ms);
      perEngine.set(r.engine, list);
    }
    const runTimes = [...perEngine.entries()]
      .map(([engine, list]) => {
        list.sort((a, b) => a - b);
        return { engine, count: list.length, p50Ms: percentile(list, 0.5), p95Ms: percentile(list, 0.95) };
      })
      .sort((a, b) => a.engine.localeCompare(b.engine));

    const oldest = backlog?.oldest === null || backlog?.oldest === undefined ? null : Number(backlog.oldest);
    return {
      range,
      since: iso(since) ?? '',
      byStatus,
      byCapability: [...caps.values()].sort((a, b) => a.capability.localeCompare(b.capability)),
      total,
      queuedNow: Number(live.find((r) => r.status === 'queued')?.n ?? 0),
      runningNow: Number(live.find((r) => r.status === 'running')?.n ?? 0),
      failureRate: ended === 0 ? null : bad / ended,
      buckets,
      runTimes,
      runTimeSample: runs.length,
      webhookBacklog: Number(backlog?.n ?? 0),
      oldestPendingDelivery: iso(oldest),
      oldestPendingAgeMs: oldest === null ? null : Math.max(0, now - oldest),
    };
  });
}
