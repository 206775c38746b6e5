import { type Kysely, sql } from 'kysely';

/**
 * Tenants kept apart, and console sessions that follow role changes.
 * - `client_ids`: every client id ever used (env clients, the generated `default`, console
 *   clients, any id that owns a job or an asset), with its look-alike form (`canonical`: ASCII
 *   lower case, punctuation removed). A console client can only be made under an id never used
 *   before and unlike every other (or by an audited adoption): ids are never forgotten, so a new
 *   client cannot inherit an old one's jobs and assets.
 * - `clients.webhook_secrets_previous`: the secrets still signing after rotations, JSON
 *   `[{ secret | null (the shared ZHINIAN_WEBHOOK_SECRET), until }]`, so each keeps its full
 *   overlap however quickly the next rotation follows.
 * - `console_sessions` gains who (`user_key`: verified e-mail or subject) and when, so an admin
 *   can end a user's sessions.
 * - `env_keys`: first and last use of keys from ZHINIAN_API_KEYS or the data dir (they have no
 *   `keys` row), found by the key's SHA-256 as console keys are.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('client_ids')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('canonical', 'text', (c) => c.notNull())
    .addColumn('first_seen_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('client_ids_canonical').on('client_ids').column('canonical').execute();
  const now = Date.now();
  const { rows } = await sql<{ client_id: string }>`
    select id as client_id from clients
    union select client_id from keys
    union select distinct client_id from jobs
    union select distinct client_id from assets`.execute(db);
  for (let i = 0; i < rows.length; i += 200) {
    await db
      .insertInto('client_ids')
      .values(rows.slice(i, i + 200).map((r) => ({ id: r.client_id, canonical: canonicalClientId(r.client_id), first_seen_at: now })))
      .execute();
  }

  await db.schema.alterTable('clients').addColumn('webhook_secrets_previous', 'text').execute();
  const rotated = await db
    .selectFrom('clients')
    .select(['id', 'webhook_secret_previous', 'webhook_secret_previous_until'])
    .where('webhook_secret_previous_until', 'is not', null)
    .execute();
  for (const row of rotated) {
    const previous = [{ secret: row.webhook_secret_previous, until: Number(row.webhook_secret_previous_until) }];
    await db
      .updateTable('clients')
      .set({ webhook_secrets_previous: JSON.stringify(previous) })
      .where('id', '=', row.id)
      .execute();
  }

  await db.schema.alterTable('console_sessions').addColumn('user_key', 'text').execute();
  await db.schema.alterTable('console_sessions').addColumn('created_at', 'bigint').execute();
  await db.schema.createIndex('console_sessions_user').on('console_sessions').column('user_key').execute();

  await db.schema
    .createTable('env_keys')
    .addColumn('hash', 'text', (c) => c.primaryKey())
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('first_seen_at', 'bigint', (c) => c.notNull())
    .addColumn('last_used_at', 'bigint')
    .execute();
}

/** The look-alike form of a client id: ASCII lower case, letters and digits only. Kept here as the migration's own copy (migrations never change). */
function canonicalClientId(id: string): string {
  return id.replace(/[A-Z]+/g, (l) => l.toLowerCase()).replace(/[^a-z0-9]/g, '');
}
