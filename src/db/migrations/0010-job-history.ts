import { PostgresAdapter, sql, type Kysely } from 'kysely';

/**
 * One place where a job changes (queue/transitions.ts) and what watches it.
 * - `jobs.version`: bumped by every transition a client can see (status, progress, engine state,
 *   why it waits); the event id of the live status stream.
 * - `jobs.waiting` / `waiting_until`: the named waiting sub-state inside `running` — `retry`
 *   (given back after a transient failure, `run_at` is the next try), `handed_back` (given back at
 *   once, e.g. on shutdown), `provider_rate_limited` (the worker holds it and waits until
 *   `waiting_until`). Null: not waiting for one of these.
 * - `job_attempts`: one row per time a worker took the job, written by the transitions.
 * - `job_changes`: on SQLite, the change log other processes poll (one cheap query per instance);
 *   PostgreSQL uses NOTIFY instead and leaves it empty.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('jobs')
    .addColumn('version', 'bigint', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.alterTable('jobs').addColumn('waiting', 'text').execute();
  await db.schema.alterTable('jobs').addColumn('waiting_until', 'bigint').execute();

  await db.schema
    .createTable('job_attempts')
    .addColumn('job_id', 'text', (c) => c.notNull())
    .addColumn('n', 'integer', (c) => c.notNull())
    .addColumn('engine', 'text', (c) => c.notNull())
    .addColumn('worker_id', 'text', (c) => c.notNull())
    .addColumn('started_at', 'bigint', (c) => c.notNull())
    .addColumn('ended_at', 'bigint')
    .addColumn('outcome', 'text', (c) => c.notNull())
    .addColumn('error_code', 'text')
    .addColumn('error_message', 'text')
    .addColumn('provider_task_id', 'text')
    .addPrimaryKeyConstraint('job_attempts_pkey', ['job_id', 'n'])
    .execute();

  // Ever increasing (also after old rows are pruned): readers resume from the last seq they saw.
  const seq = db.getExecutor().adapter instanceof PostgresAdapter ? sql`bigserial primary key` : sql`integer primary key autoincrement`;
  await sql`create table job_changes (seq ${seq}, job_id text not null, version bigint not null, at bigint not null)`.execute(db);
}
