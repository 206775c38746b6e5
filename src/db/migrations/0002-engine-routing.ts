import { sql, type Kysely } from 'kysely';

// Routing between engines: whether the client chose the engine (then it is never changed),
// the claim index per engine, and the shared circuit breaker state of each engine.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('jobs')
    .addColumn('engine_pinned', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.createIndex('jobs_engine_run_at').on('jobs').columns(['engine', 'run_at']).where(sql.ref('run_at'), 'is not', null).execute();
  await db.schema
    .createTable('engine_circuits')
    .addColumn('engine', 'text', (c) => c.primaryKey())
    .addColumn('consecutive_failures', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('open_until', 'bigint')
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();
}
