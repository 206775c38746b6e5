import type { DbHandle } from '../db/index.ts';
import { forgetIdempotencyKeys } from './idempotency-keys.ts';
import { forgetOldRateWindows } from './rate-limit.ts';

/** Idempotency keys are kept two days (the contract promises at least one). */
const IDEMPOTENCY_KEY_TTL_MS = 2 * 86_400_000;

/** Forgets idempotency keys after two days and rate-limit windows no longer read. */
export async function purgeStaleRows(handle: DbHandle, now: number): Promise<void> {
  await forgetIdempotencyKeys(handle.db, now, IDEMPOTENCY_KEY_TTL_MS);
  await forgetOldRateWindows(handle.db, now);
}

/** How long SQLite's job change log keeps a change: far longer than any reader's poll interval. */
const JOB_CHANGES_KEEP_MS = 60_000;
const PRUNE_BATCH = 1000;
const PRUNE_BATCHES = 10;

/**
 * Prunes SQLite's job change log (queue/changes.ts, read by live/feed.ts), oldest first, in short
 * transactions so writers are never held up for long. Run by every worker's sweep, each second;
 * PostgreSQL keeps no such log.
 */
export async function pruneJobChanges(handle: DbHandle, now: number): Promise<void> {
  if (handle.dialect !== 'sqlite') return;
  for (let i = 0; i < PRUNE_BATCHES; i++) {
    const oldest = handle.db
      .selectFrom('job_changes')
      .select('seq')
      .where('at', '<', now - JOB_CHANGES_KEEP_MS)
      .orderBy('seq')
      .limit(PRUNE_BATCH);
    const result = await handle.db.deleteFrom('job_changes').where('seq', 'in', oldest).executeTakeFirst();
    if (Number(result.numDeletedRows) < PRUNE_BATCH) return;
  }
}
