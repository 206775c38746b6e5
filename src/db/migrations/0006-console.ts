import type { Kysely } from 'kysely';

/**
 * The browser console (console/): API clients and keys managed in the database, console
 * sessions, one-time sign-in links and the audit log.
 * - `clients` gains the console's settings: display name, disabled, allowed engines (JSON array,
 *   null: all), its own webhook secret and, while a rotation overlaps, the previous one.
 * - `keys`: API keys as SHA-256 hashes. A key reads `zk_<id>_<secret>`; the id is the primary
 *   key, so a lookup is one indexed row and one hash compare, never a scan.
 * - `console_sessions`: server-side sessions (sign-out deletes the row, so it ends everywhere).
 * - `console_login_tokens`: hashes of the one-time sign-in links (no identity provider).
 * - `audit_log`: every change made in the console, newest found by (at, id).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('clients').addColumn('name', 'text').execute();
  await db.schema
    .alterTable('clients')
    .addColumn('disabled', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.alterTable('clients').addColumn('allowed_engines', 'text').execute();
  await db.schema
    .alterTable('clients')
    .addColumn('source', 'text', (c) => c.notNull().defaultTo('settings'))
    .execute();
  await db.schema.alterTable('clients').addColumn('webhook_secret', 'text').execute();
  await db.schema.alterTable('clients').addColumn('webhook_secret_previous', 'text').execute();
  await db.schema.alterTable('clients').addColumn('webhook_secret_previous_until', 'bigint').execute();

  await db.schema
    .createTable('keys')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('secret_hash', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint')
    .addColumn('revoked_at', 'bigint')
    .addColumn('last_used_at', 'bigint')
    .execute();
  await db.schema.createIndex('keys_client').on('keys').columns(['client_id', 'created_at']).execute();

  await db.schema
    .createTable('console_sessions')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('data', 'text', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('console_sessions_expires').on('console_sessions').column('expires_at').execute();

  await db.schema
    .createTable('console_login_tokens')
    .addColumn('token_hash', 'text', (c) => c.primaryKey())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('audit_log')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('at', 'bigint', (c) => c.notNull())
    .addColumn('actor', 'text', (c) => c.notNull())
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('target', 'text', (c) => c.notNull())
    .addColumn('detail', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('audit_log_at').on('audit_log').columns(['at', 'id']).execute();
}
