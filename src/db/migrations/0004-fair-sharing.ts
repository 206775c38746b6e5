import { sql, type Kysely } from 'kysely';

/**
 * Fair sharing between clients.
 * - `clients`: one row per API client, with per-client overrides of the env limits (null:
 *   the env default). A client without a row has the env defaults.
 * - `jobs.fair_key`: a queued job's place in its engine's fair order (see queue/fair-order.ts);
 *   jobs queued before this migration keep their FIFO order.
 * - Claim indexes: queued and running jobs by (engine, fair_key), all jobs by (engine, client, fair_key); jobs
 *   by (status, run_at) for takeovers and the queue TTL sweep. They replace the run_at indexes.
 * - `rate_windows` gains a scope (`jobs` or `requests`): it is rebuilt, losing at most a
 *   minute of counts.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('clients')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('max_running', 'integer')
    .addColumn('weight', 'integer')
    .addColumn('rate_limit_jobs_per_minute', 'integer')
    .addColumn('rate_limit_requests_per_minute', 'integer')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();

  await db.schema
    .alterTable('jobs')
    .addColumn('fair_key', 'bigint', (c) => c.notNull().defaultTo(0))
    .execute();
  await sql`update jobs set fair_key = created_at_us where status = 'queued'`.execute(db);
  await db.schema.dropIndex('jobs_run_at').execute();
  await db.schema.dropIndex('jobs_engine_run_at').execute();
  // Partial: only queued jobs are in them (kysely writes the value as a literal, as both databases need).
  await db.schema.createIndex('jobs_queued_fair').on('jobs').columns(['engine', 'fair_key']).where(sql.ref('status'), '=', 'queued').execute();
  // Running jobs by key: the fair order's virtual time (the highest running key).
  await db.schema.createIndex('jobs_running_fair').on('jobs').columns(['engine', 'fair_key']).where(sql.ref('status'), '=', 'running').execute();
  // Every job: a client's last key on an engine, and the clients that queued on it.
  await db.schema.createIndex('jobs_engine_client_fair').on('jobs').columns(['engine', 'client_id', 'fair_key']).execute();
  await db.schema.createIndex('jobs_status_run_at').on('jobs').columns(['status', 'run_at']).where(sql.ref('run_at'), 'is not', null).execute();

  await db.schema.dropTable('rate_windows').execute();
  await db.schema
    .createTable('rate_windows')
    .addColumn('scope', 'text', (c) => c.notNull())
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('window_start', 'bigint', (c) => c.notNull())
    .addColumn('count', 'integer', (c) => c.notNull())
    .addPrimaryKeyConstraint('rate_windows_pk', ['scope', 'client_id', 'window_start'])
    .execute();
}
