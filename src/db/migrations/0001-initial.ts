import { sql, type Kysely } from 'kysely';

// Portable DDL only: this runs unchanged on SQLite and PostgreSQL.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('jobs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('capability', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('prompt', 'text')
    .addColumn('params', 'text', (c) => c.notNull())
    .addColumn('input_asset_ids', 'text', (c) => c.notNull())
    .addColumn('output_asset_ids', 'text', (c) => c.notNull())
    .addColumn('error_code', 'text')
    .addColumn('error_message', 'text')
    .addColumn('progress', 'integer')
    .addColumn('engine', 'text', (c) => c.notNull())
    .addColumn('webhook_url', 'text')
    .addColumn('metadata', 'text')
    .addColumn('created_at_us', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .addColumn('started_at', 'bigint')
    .addColumn('finished_at', 'bigint')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('run_at', 'bigint')
    .addColumn('lease_owner', 'text')
    .addColumn('engine_state', 'text')
    .execute();
  // Paging per client, optionally filtered; the unique one also makes sort keys unique.
  await db.schema.createIndex('jobs_client_created').unique().on('jobs').columns(['client_id', 'created_at_us']).execute();
  await db.schema.createIndex('jobs_client_status_created').on('jobs').columns(['client_id', 'status', 'created_at_us']).execute();
  await db.schema.createIndex('jobs_client_capability_created').on('jobs').columns(['client_id', 'capability', 'created_at_us']).execute();
  // The claim query: next claimable job by time. Terminal jobs have run_at null and drop out.
  await db.schema.createIndex('jobs_run_at').on('jobs').column('run_at').where(sql.ref('run_at'), 'is not', null).execute();
  await db.schema.createIndex('jobs_status_started').on('jobs').columns(['status', 'started_at']).execute();

  await db.schema
    .createTable('idempotency_keys')
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('request_hash', 'text', (c) => c.notNull())
    .addColumn('job_id', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('idempotency_keys_pk', ['client_id', 'key'])
    .execute();
  await db.schema.createIndex('idempotency_keys_created').on('idempotency_keys').column('created_at').execute();

  await db.schema
    .createTable('assets')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('mime_type', 'text', (c) => c.notNull())
    .addColumn('bytes', 'bigint', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addColumn('width', 'integer')
    .addColumn('height', 'integer')
    .addColumn('duration_seconds', 'double precision')
    .addColumn('source', 'text', (c) => c.notNull())
    .addColumn('source_url', 'text')
    .addColumn('job_id', 'text')
    .addColumn('storage_key', 'text', (c) => c.notNull())
    .addColumn('created_at_us', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('assets_client_created').unique().on('assets').columns(['client_id', 'created_at_us']).execute();
  await db.schema.createIndex('assets_client_kind_created').on('assets').columns(['client_id', 'kind', 'created_at_us']).execute();

  await db.schema
    .createTable('webhook_deliveries')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('job_id', 'text', (c) => c.notNull())
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('event', 'text', (c) => c.notNull())
    .addColumn('url', 'text', (c) => c.notNull())
    .addColumn('payload', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('next_attempt_at', 'bigint')
    .addColumn('lease_owner', 'text')
    .addColumn('last_status_code', 'integer')
    .addColumn('last_error', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('delivered_at', 'bigint')
    .execute();
  await db.schema.createIndex('webhook_deliveries_job_event').unique().on('webhook_deliveries').columns(['job_id', 'event']).execute();
  await db.schema.createIndex('webhook_deliveries_due').on('webhook_deliveries').column('next_attempt_at').where(sql.ref('next_attempt_at'), 'is not', null).execute();

  await db.schema
    .createTable('webhook_attempts')
    .addColumn('delivery_id', 'text', (c) => c.notNull())
    .addColumn('attempt', 'integer', (c) => c.notNull())
    .addColumn('started_at', 'bigint', (c) => c.notNull())
    .addColumn('duration_ms', 'integer', (c) => c.notNull())
    .addColumn('status_code', 'integer')
    .addColumn('error', 'text')
    .addPrimaryKeyConstraint('webhook_attempts_pk', ['delivery_id', 'attempt'])
    .execute();
}
