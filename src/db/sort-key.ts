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
