import type { JobsTable, Tx } from '../db/index.ts';

/**
 * The only module that touches `idempotency_keys`: (client, key) → the job a request made and
 * the hash of its body. The key row is inserted in the job's own transaction under a unique
 * (client, key) index, so racing duplicates make one job.
 */

/** The job `key` of `clientId` made, with the hash of the body that made it; undefined if none. */
export async function findKeyedJob(db: Tx, clientId: string, key: string): Promise<(JobsTable & { request_hash: string }) | undefined> {
  return db
    .selectFrom('idempotency_keys')
    .innerJoin('jobs', 'jobs.id', 'idempotency_keys.job_id')
    .selectAll('jobs')
    .select('idempotency_keys.request_hash')
    .where('idempotency_keys.client_id', '=', clientId)
    .where('idempotency_keys.key', '=', key)
    .executeTakeFirst();
}

/** Claims `key` for the job about to be inserted; false when another request holds it (a racing twin won). */
export async function claimIdempotencyKey(tx: Tx, row: { clientId: string; key: string; requestHash: string; jobId: string; now: number }): Promise<boolean> {
  const inserted = await tx
    .insertInto('idempotency_keys')
    .values({ client_id: row.clientId, key: row.key, request_hash: row.requestHash, job_id: row.jobId, created_at: row.now })
    .onConflict((oc) => oc.columns(['client_id', 'key']).doNothing())
    .returning('job_id')
    .executeTakeFirst();
  return inserted !== undefined;
}

/** Forgets keys older than `maxAgeMs`. */
export async function forgetIdempotencyKeys(db: Tx, now: number, maxAgeMs: number): Promise<void> {
  await db
    .deleteFrom('idempotency_keys')
    .where('created_at', '<', now - maxAgeMs)
    .execute();
}
