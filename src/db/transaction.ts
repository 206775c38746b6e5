import { sql, type Transaction } from 'kysely';
import type { DbHandle } from './connect.ts';
import type { Database } from './schema.ts';

export type Tx = Transaction<Database> | DbHandle['db'];

/**
 * Runs `fn` in one transaction. On SQLite it is `BEGIN IMMEDIATE`: the write lock is taken up
 * front, so a transaction that reads before it writes can never fail half-way because another
 * process wrote in between (a deferred transaction would get SQLITE_BUSY without waiting).
 */
export async function withTransaction<T>(handle: DbHandle, fn: (tx: Tx) => Promise<T>): Promise<T> {
  if (handle.dialect === 'postgres') return handle.db.transaction().execute(fn);
  return handle.db.connection().execute(async (conn) => {
    await sql`begin immediate`.execute(conn);
    try {
      const result = await fn(conn);
      await sql`commit`.execute(conn);
      return result;
    } catch (error) {
      await sql`rollback`.execute(conn).catch(() => {});
      throw error;
    }
  });
}
