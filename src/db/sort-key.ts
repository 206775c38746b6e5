import { sql, type RawBuilder } from 'kysely';
import type { Dialect } from './connect.ts';

/**
 * The per-client sort key for a new row: the current time in microseconds, bumped past the
 * client's newest row so that keys are unique and increasing per client. SQLite runs the
 * insert under its single writer lock, so the read-and-insert cannot interleave; PostgreSQL
 * backs it with the unique (client_id, created_at_us) index and the caller retries.
 */
export function nextSortKey(dialect: Dialect, table: 'jobs' | 'assets', clientId: string, nowMs: number): RawBuilder<number> {
  const max = sql.raw(dialect === 'sqlite' ? 'max' : 'greatest');
  return sql<number>`${max}(${nowMs * 1000}, coalesce((select max(created_at_us) from ${sql.table(table)} where client_id = ${clientId}), 0) + 1)`;
}

const SORT_KEY_INDEXES = new Set(['jobs_client_created', 'assets_client_created']);
const MAX_SORT_KEY_TRIES = 20;

/** A PostgreSQL unique violation on a per-client sort key: another transaction took the same key. */
function isSortKeyConflict(error: unknown): boolean {
  const e = error as { code?: unknown; constraint?: unknown } | null;
  return e?.code === '23505' && typeof e.constraint === 'string' && SORT_KEY_INDEXES.has(e.constraint);
}

/**
 * Runs a transaction that inserts rows with `nextSortKey`, again when a concurrent one (another
 * process, or another pooled connection) committed the same key first. The loser's insert waits
 * on the unique index until the winner commits, so the retry reads the winner's key and each
 * round lets at least one transaction through. A short random pause keeps many racers from
 * colliding in lockstep. SQLite never gets here: its writer lock serialises the inserts.
 */
export async function retryOnSortKeyConflict<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (!isSortKeyConflict(error) || attempt >= MAX_SORT_KEY_TRIES) throw error;
      await new Promise((r) => setTimeout(r, Math.random() * Math.min(attempt, 5)));
    }
  }
}
