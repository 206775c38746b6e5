import { sql, type Kysely } from 'kysely';

/**
 * Webhook fairness between clients (webhooks/endpoints.ts): one receiver origin's capacity is
 * divided between the clients sending to it, and timeouts back off one client's deliveries to
 * an origin, not every client's.
 * - `webhook_endpoints` is keyed by (client_id, origin). A block still running is carried over to
 *   each client with deliveries still to be sent to that origin (the others never met it).
 * - Indexes: due deliveries and held ones per (origin, client), replacing those per origin (a
 *   claim holds back one client's rows of an origin; an ended attempt finds the clients waiting
 *   for the origin one probe each, and lets each one's earliest go).
 * - `clients_disabled`: the few disabled clients, which claims of jobs and webhooks leave out.
 */
export async function up(db: Kysely<any>): Promise<void> {
  const old: { origin: string; consecutive_failures: number; blocked_until: number | null; updated_at: number }[] = await db
    .selectFrom('webhook_endpoints')
    .select(['origin', 'consecutive_failures', 'blocked_until', 'updated_at'])
    .execute();
  await db.schema.dropTable('webhook_endpoints').execute();
  await db.schema
    .createTable('webhook_endpoints')
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('origin', 'text', (c) => c.notNull())
    .addColumn('consecutive_failures', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('blocked_until', 'bigint')
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('webhook_endpoints_pkey', ['client_id', 'origin'])
    .execute();
  for (const row of old) {
    const clients: { client_id: string }[] = await db
      .selectFrom('webhook_deliveries')
      .select('client_id')
      .distinct()
      .where('origin', '=', row.origin)
      .where('next_attempt_at', 'is not', null)
      .execute();
    for (const { client_id } of clients) {
      await db
        .insertInto('webhook_endpoints')
        .values({ client_id, origin: row.origin, consecutive_failures: row.consecutive_failures, blocked_until: row.blocked_until, updated_at: row.updated_at })
        .execute();
    }
  }

  await db.schema.dropIndex('webhook_deliveries_origin_due').execute();
  await db.schema
    .createIndex('webhook_deliveries_origin_client_due')
    .on('webhook_deliveries')
    .columns(['origin', 'client_id', 'next_attempt_at'])
    .where(sql.ref('next_attempt_at'), 'is not', null)
    .execute();
  await db.schema.dropIndex('webhook_deliveries_origin_held').execute();
  await db.schema
    .createIndex('webhook_deliveries_origin_client_held')
    .on('webhook_deliveries')
    .columns(['origin', 'client_id', 'held_due_at'])
    .where(sql.ref('held_due_at'), 'is not', null)
    .execute();
  await db.schema.createIndex('clients_disabled').on('clients').column('id').where(sql.ref('disabled'), '=', sql.lit(1)).execute();
}
