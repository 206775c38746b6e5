import { Migrator, sql, type Migration } from 'kysely';
import type { DbHandle } from './connect.ts';
import * as m0001 from './migrations/0001-initial.ts';
import * as m0002 from './migrations/0002-engine-routing.ts';
import * as m0003 from './migrations/0003-rate-limits.ts';
import * as m0004 from './migrations/0004-fair-sharing.ts';
import * as m0005 from './migrations/0005-webhook-isolation.ts';
import * as m0006 from './migrations/0006-console.ts';
import * as m0007 from './migrations/0007-usage-rollup.ts';
import * as m0008 from './migrations/0008-tenants.ts';
import * as m0009 from './migrations/0009-webhook-fairness.ts';
import * as m0010 from './migrations/0010-job-history.ts';

/** Append-only: never edit a migration once merged; add the next number instead. */
const migrations: Record<string, Migration> = {
  '0001-initial': m0001,
  '0002-engine-routing': m0002,
  '0003-rate-limits': m0003,
  '0004-fair-sharing': m0004,
  '0005-webhook-isolation': m0005,
  '0006-console': m0006,
  '0007-usage-rollup': m0007,
  '0008-tenants': m0008,
  '0009-webhook-fairness': m0009,
  '0010-job-history': m0010,
};

/**
 * Brings the schema up to date. Several processes may start at once on one SQLite file; the
 * loser of that race sees a lock or "already exists" error and simply tries again, by which
 * time the winner has recorded the migration. On PostgreSQL kysely takes an advisory lock and
 * runs each migration in a transaction; only creating its own tables can race, and is retried.
 */
export async function migrateToLatest(handle: DbHandle): Promise<void> {
  const migrator = new Migrator({
    db: handle.db,
    provider: { getMigrations: async () => migrations },
    // PostgreSQL: kysely looks for its bookkeeping tables in every schema unless told which;
    // another deployment's (or test's) schema in the same database would then pass for ours.
    migrationTableSchema: handle.dialect === 'postgres' ? await currentSchema(handle) : undefined,
  });
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const { error } = await migrator.migrateToLatest();
    if (!error) return;
    lastError = error;
    await new Promise((r) => setTimeout(r, 50 + Math.random() * 200));
  }
  throw lastError;
}

async function currentSchema(handle: DbHandle): Promise<string> {
  const { rows } = await sql<{ schema: string | null }>`select current_schema() as schema`.execute(handle.db);
  if (!rows[0]?.schema) throw new Error('PostgreSQL has no current schema: the search_path names no existing schema.');
  return rows[0].schema;
}
