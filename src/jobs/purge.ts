import type { DbHandle } from '../db/index.ts';
import { WINDOW_MS } from './rate-limit.ts';

/**
 * Forgets idempotency keys after two days (the contract promises at least one) and rate-limit
 * windows no longer read (only the current and the previous minute are).
 */
export async function purgeStaleRows(handle: DbHandle, now: number): Promise<void> {
  await handle.db
    .deleteFrom('idempotency_keys')
    .where('created_at', '<', now - 2 * 86_400_000)
    .execute();
  await handle.db
    .deleteFrom('rate_windows')
    .where('window_start', '<', now - 2 * WINDOW_MS)
    .execute();
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
