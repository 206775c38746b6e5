import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { outageBackoffMs } from '../lib/retry-ladders.ts';
import type { Database } from './schema.ts';

// int8 (bigint columns, count(*)) arrives as a string by default. Every bigint here is an
// epoch time in ms or µs (< 2^53 until the year 2255), so a JS number is exact and rows look
// the same as SQLite's.
pg.types.setTypeParser(20, (value) => Number(value));

export interface PostgresOptions {
  url: string;
  /** Pool size per process (ZHINIAN_DB_POOL_MAX). */
  poolMax: number;
  /** Connection-level errors (the server went away); never fatal. */
  onError: (error: Error) => void;
}

/**
 * A pooled connection. The URL may carry the schema (`?options=-c%20search_path%3Dxyz`): pg
 * sends `options` in the startup packet, so every pooled connection and the LISTEN client use it.
 */
export function connectPostgres(opts: PostgresOptions): { db: Kysely<Database>; pool: pg.Pool } {
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.poolMax,
    // A dead server must fail requests (and /readyz) within seconds, not hang them.
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
  });
  // An idle pooled client whose server connection drops emits 'error' on the pool, and a
  // checked-out one on itself; unhandled, either would crash the process. The broken client is
  // discarded on release (pg-pool drops clients that are no longer queryable), queries in flight
  // fail, and the callers' loops retry.
  pool.on('error', opts.onError);
  pool.on('connect', (client) => client.on('error', opts.onError));
  return { db: new Kysely<Database>({ dialect: new PostgresDialect({ pool }) }), pool };
}

/**
 * Returns once the server answers, trying again (backing off) for as long as it takes: a
 * process started before its database, or during an outage, waits and logs instead of exiting
 * into a restart loop. Wrong credentials look the same from here and are retried
 * too; `onRetry` logs each failure with its reason.
 */
export async function waitForDatabase(db: Kysely<Database>, onRetry: (error: Error, retryInMs: number) => void): Promise<void> {
  for (let failures = 1; ; failures++) {
    try {
      await sql`select 1`.execute(db);
      return;
    } catch (error) {
      const delay = outageBackoffMs(failures);
      onRetry(error as Error, delay);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
