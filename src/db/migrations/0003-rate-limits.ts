import type { Kysely } from 'kysely';

// Job creations per client and minute, counted in the database so that a limit holds across
// every API instance. Two windows per client are ever read; older ones are purged.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('rate_windows')
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('window_start', 'bigint', (c) => c.notNull())
    .addColumn('count', 'integer', (c) => c.notNull())
    .addPrimaryKeyConstraint('rate_windows_pk', ['client_id', 'window_start'])
    .execute();
}
