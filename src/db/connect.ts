import fs from 'node:fs';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, SqliteDialect, sql } from 'kysely';
import { startCheckpointer } from './checkpointer.ts';
import { connectPostgres } from './postgres.ts';
import type { Database, Db } from './schema.ts';

export type Dialect = 'sqlite' | 'postgres';

export interface DbHandle {
  db: Db;
  dialect: Dialect;
  close(): Promise<void>;
}

export interface ConnectOptions {
  /** `postgres://…` selects PostgreSQL; null: the SQLite file in `dataDir`. */
  databaseUrl: string | null;
  dataDir: string;
  /** PostgreSQL pool size (default 10). */
  poolMax?: number;
  /** PostgreSQL connection errors; they are survived, this only reports them. */
  onError?: (error: Error) => void;
}

export async function connectDb(opts: ConnectOptions): Promise<DbHandle> {
  if (opts.databaseUrl) {
    const { db } = connectPostgres({ url: opts.databaseUrl, poolMax: opts.poolMax ?? 10, onError: opts.onError ?? (() => {}) });
    return { db, dialect: 'postgres', close: () => db.destroy() };
  }
  fs.mkdirSync(opts.dataDir, { recursive: true });
  const file = path.join(opts.dataDir, 'zhinian.db');
  const sqlite = new SqliteDatabase(file);
  // WAL lets readers run beside the one writer; NORMAL sync keeps WAL durable across a process
  // crash (only an OS crash can lose the last commits). The busy timeout lets several worker
  // processes share the file: a writer waits for the lock instead of failing.
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 10000');
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma('wal_autocheckpoint = 0');
  const checkpointer = startCheckpointer(file);
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(sqlite) }) });
  return {
    db,
    dialect: 'sqlite',
    async close() {
      await checkpointer.stop();
      await db.destroy();
    },
  };
}

/** Cheap round trip for `/readyz`. */
export async function pingDb(db: Db): Promise<void> {
  await sql`select 1`.execute(db);
}

/**
 * Kysely prepares every query anew; preparing costs more than running the small statements
 * this service issues, so prepared statements are kept per SQL text (a bounded map: the
 * service issues a few dozen distinct statements, plus IN-lists of varying length).
 */
function withStatementCache(sqlite: SqliteDatabase.Database): SqliteDatabase.Database {
  const cache = new Map<string, SqliteDatabase.Statement>();
  const MAX_STATEMENTS = 500;
  return new Proxy(sqlite, {
    get(target, prop, receiver) {
      if (prop !== 'prepare') {
        const value = Reflect.get(target, prop, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      }
      return (source: string) => {
        let stmt = cache.get(source);
        if (stmt) {
          // Least recently used goes first: one-off IN-list shapes never push out the hot statements.
          cache.delete(source);
        } else {
          stmt = target.prepare(source);
          if (cache.size >= MAX_STATEMENTS) cache.delete(cache.keys().next().value!);
        }
        cache.set(source, stmt);
        return stmt;
      };
    },
  });
}
