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
