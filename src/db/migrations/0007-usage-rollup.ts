import { type Kysely, sql } from 'kysely';

/**
 * `usage_daily`: the console's usage, counted when jobs end instead of scanned from `jobs`.
 * One row per UTC day (days since 1970-01-01 of the job's creation), client, capability and
 * engine (the one the job ended on), with its ended jobs by outcome and their output bytes.
 * queue/usage-rollup.ts adds to it in the transaction that ends each job. The back-fill below
 * counts the jobs that had already ended, once, with the same rules.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('usage_daily')
    .addColumn('day', 'integer', (c) => c.notNull())
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('capability', 'text', (c) => c.notNull())
    .addColumn('engine', 'text', (c) => c.notNull())
    .addColumn('jobs', 'bigint', (c) => c.notNull())
    .addColumn('succeeded', 'bigint', (c) => c.notNull())
    .addColumn('failed', 'bigint', (c) => c.notNull())
    .addColumn('expired', 'bigint', (c) => c.notNull())
    .addColumn('cancelled', 'bigint', (c) => c.notNull())
    .addColumn('output_bytes', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('usage_daily_pk', ['day', 'client_id', 'capability', 'engine'])
    .execute();
  await backfillUsage(db);
}

/**
 * Counts every ended job in `usage_daily` (into an empty table: run once, by the migration; the
 * bench uses it after bulk-loading jobs). Integer division of integers on both dialects;
 * ordinals keep the group by equal to the select.
 */
export async function backfillUsage(db: Kysely<any>): Promise<void> {
  const count = (status: string) => sql`sum(case when j.status = ${sql.lit(status)} then 1 else 0 end)`;
  await sql`
    insert into usage_daily (day, client_id, capability, engine, jobs, succeeded, failed, expired, cancelled, output_bytes)
    select j.created_at_us / ${sql.lit(86_400_000_000)}, j.client_id, j.capability, j.engine,
      count(*), ${count('succeeded')}, ${count('failed')}, ${count('expired')}, ${count('cancelled')},
      coalesce(sum(o.bytes), 0)
    from jobs j
    left join (
      select job_id, sum(bytes) as bytes from assets where source = 'output' and job_id is not null group by job_id
    ) o on o.job_id = j.id
    where j.status in ('succeeded', 'failed', 'expired', 'cancelled')
    group by 1, 2, 3, 4`.execute(db);
}
