import { sql, type Kysely } from 'kysely';

/**
 * Webhook isolation (webhooks/endpoints.ts): deliveries are limited per receiver origin, and a
 * receiver that keeps timing out is backed off, so it never delays deliveries to others.
 * - `webhook_deliveries.origin`: `scheme://host:port` of the URL, lowercased; set at enqueue and
 *   backfilled here for deliveries still to be sent (sent ones keep '': nothing reads it there).
 * - `webhook_deliveries.held_due_at`: a delivery held back for its origin keeps its own due time.
 * - `webhook_endpoints`: per origin, failures in a row and the block they earned.
 * - Indexes: due deliveries per client (the claim picks a client, then its earliest rows; it
 *   replaces the index by time alone) and per origin (holding an origin's due rows back), held
 *   rows per origin (letting the next one go), and attempts in flight (the cap and the fair
 *   order count them; few rows).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('webhook_deliveries')
    .addColumn('origin', 'text', (c) => c.notNull().defaultTo(''))
    .execute();
  await db.schema.alterTable('webhook_deliveries').addColumn('held_due_at', 'bigint').execute();

  // Backfill in JS (URL parsing is not SQL), in pages by id.
  for (let after = ''; ; ) {
    const rows: { id: string; url: string }[] = await db
      .selectFrom('webhook_deliveries')
      .select(['id', 'url'])
      .where('next_attempt_at', 'is not', null)
      .where('id', '>', after)
      .orderBy('id')
      .limit(500)
      .execute();
    if (rows.length === 0) break;
    for (const row of rows) {
      await db
        .updateTable('webhook_deliveries')
        .set({ origin: originOf(row.url) })
        .where('id', '=', row.id)
        .execute();
    }
    after = rows[rows.length - 1]!.id;
  }

  await db.schema
    .createTable('webhook_endpoints')
    .addColumn('origin', 'text', (c) => c.primaryKey())
    .addColumn('consecutive_failures', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('blocked_until', 'bigint')
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();

  // The claim now finds due rows per client; the index by time alone would tempt PostgreSQL's
  // planner to look for one client's earliest row among every client's rows.
  await db.schema.dropIndex('webhook_deliveries_due').execute();
  const due = [sql.ref('next_attempt_at'), 'is not', null] as const;
  await db.schema
    .createIndex('webhook_deliveries_client_due')
    .on('webhook_deliveries')
    .columns(['client_id', 'next_attempt_at'])
    .where(...due)
    .execute();
  await db.schema
    .createIndex('webhook_deliveries_origin_due')
    .on('webhook_deliveries')
    .columns(['origin', 'next_attempt_at'])
    .where(...due)
    .execute();
  await db.schema.createIndex('webhook_deliveries_origin_held').on('webhook_deliveries').columns(['origin', 'held_due_at']).where(sql.ref('held_due_at'), 'is not', null).execute();
  await db.schema
    .createIndex('webhook_deliveries_leased')
    .on('webhook_deliveries')
    .columns(['origin', 'client_id', 'next_attempt_at'])
    .where(sql.ref('lease_owner'), 'is not', null)
    .execute();
}

/** As webhooks/endpoints.ts computed it when this migration was written (a migration never changes). */
function originOf(url: string): string {
  try {
    const u = new URL(url);
    const port = u.port || (u.protocol === 'https:' ? '443' : u.protocol === 'http:' ? '80' : '');
    return `${u.protocol}//${u.hostname}:${port}`.toLowerCase();
  } catch {
    return `invalid:${url}`.toLowerCase();
  }
}
