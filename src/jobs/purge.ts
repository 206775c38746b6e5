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
