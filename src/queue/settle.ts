import { insertAssetRows } from '../assets/repo.ts';
import type { AssetsTable, DbHandle, JobsTable } from '../db/index.ts';
import { retryOnSortKeyConflict, withTransaction } from '../db/index.ts';
import { eventFor, toJob } from '../contract/index.ts';
import type { JobErrorCode } from '../lib/error-codes.ts';
import type { Notifier } from '../lib/notifier.ts';
import { enqueueWebhook } from '../webhooks/outbox.ts';
import { jobUpdate, TRANSITIONS, type JobTarget, type Settlement } from './transitions.ts';
import { addToUsage } from './usage-rollup.ts';

export interface SettleInput extends JobTarget {
  jobId: string;
  transition: Settlement;
  error?: { code: JobErrorCode; message: string } | null;
  /** Output assets created together with the transition. */
  outputs?: AssetsTable[];
  now: number;
}

/**
 * Ends a job: one conditional update to its terminal state and, in the same transaction, its
 * output asset rows, its webhook event (the outbox) and its count in the daily usage roll-up.
 * Every terminal transition (worker verdicts, the deadline sweep, cancel) comes through here. Returns null when the transition was
 * not allowed (cancelled meanwhile, lease lost, already finished): then nothing was written, so
 * a losing worker's outputs never become visible.
 */
export async function settleJob(handle: DbHandle, notifier: Notifier | null, input: SettleInput): Promise<JobsTable | null> {
  const status = TRANSITIONS[input.transition].to;
  // Outputs take sort keys: on PostgreSQL a concurrent insert may take the same one, and then the
  // whole transition runs again (nothing of the failed attempt was committed).
  const row = await retryOnSortKeyConflict(() =>
    withTransaction(handle, async (tx) => {
      const updated = await jobUpdate(tx, input.transition, input)
        .set({
          status,
          error_code: input.error?.code ?? null,
          error_message: input.error?.message ?? null,
          output_asset_ids: JSON.stringify((input.outputs ?? []).map((a) => a.id)),
          progress: status === 'succeeded' ? 100 : undefined,
          run_at: null,
          lease_owner: null,
          updated_at: input.now,
          finished_at: input.now,
        })
        .returningAll()
        .executeTakeFirst();
      if (!updated) return null;
      await insertAssetRows(tx, handle.dialect, input.outputs ?? [], input.now);
      if (updated.webhook_url) {
        await enqueueWebhook(tx, { jobId: updated.id, clientId: updated.client_id, url: updated.webhook_url, event: eventFor(status), job: toJob(updated), now: input.now });
      }
      // Last: the roll-up row is shared by the day's jobs of that client, so its lock is held briefly.
      const outputBytes = (input.outputs ?? []).reduce((sum, a) => sum + Number(a.bytes), 0);
      await addToUsage(tx, updated, status, outputBytes);
      return updated;
    }),
  );
  if (row?.webhook_url) notifier?.webhookDue();
  return row;
}
