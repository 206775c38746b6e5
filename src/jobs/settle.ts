import type { AssetsTable, DbHandle, JobsTable } from '../db/index.ts';
import { nextSortKey, retryOnSortKeyConflict, withTransaction } from '../db/index.ts';
import type { Notifier } from '../lib/notifier.ts';
import { enqueueWebhook } from '../webhooks/outbox.ts';
import { eventFor, type JobStatus, type TerminalStatus } from './lifecycle.ts';
import { toJob } from './repo.ts';

export interface SettleInput {
  jobId: string;
  status: TerminalStatus;
  /** Only a job in one of these states moves (terminal is final). */
  from: readonly JobStatus[];
  /** When set, only while this worker still holds the lease. */
  leaseOwner?: string;
  clientId?: string;
  error?: { code: string; message: string } | null;
  /** Output assets created together with the transition. */
  outputs?: AssetsTable[];
  now: number;
}

/**
 * Moves a job to a terminal state with one conditional update, and in the same transaction
 * stores its output assets and its webhook. Returns null when the job was not in an expected
 * state (cancelled meanwhile, lease lost, already finished): then nothing was written, so a
 * losing worker's outputs never become visible.
 */
export async function settleJob(handle: DbHandle, notifier: Notifier | null, input: SettleInput): Promise<JobsTable | null> {
  // Outputs take sort keys: on PostgreSQL a concurrent insert may take the same one, and then the
  // whole transition runs again (nothing of the failed attempt was committed).
  const row = await retryOnSortKeyConflict(() => withTransaction(handle, async (tx) => {
    let query = tx
      .updateTable('jobs')
      .set({
        status: input.status,
        error_code: input.error?.code ?? null,
        error_message: input.error?.message ?? null,
        output_asset_ids: JSON.stringify((input.outputs ?? []).map((a) => a.id)),
        progress: input.status === 'succeeded' ? 100 : undefined,
        run_at: null,
        lease_owner: null,
        updated_at: input.now,
        finished_at: input.now,
      })
      .where('id', '=', input.jobId)
      .where('status', 'in', input.from);
    if (input.leaseOwner !== undefined) query = query.where('lease_owner', '=', input.leaseOwner);
    if (input.clientId !== undefined) query = query.where('client_id', '=', input.clientId);
    const updated = await query.returningAll().executeTakeFirst();
    if (!updated) return null;
    for (const asset of input.outputs ?? []) {
      const sortKey = nextSortKey(handle.dialect, 'assets', asset.client_id, input.now);
      await tx.insertInto('assets').values({ ...asset, created_at_us: sortKey }).execute();
    }
    if (updated.webhook_url) {
      await enqueueWebhook(tx, {
        jobId: updated.id,
        clientId: updated.client_id,
        url: updated.webhook_url,
        event: eventFor(input.status),
        job: toJob(updated),
        now: input.now,
      });
    }
    return updated;
  }));
  if (row?.webhook_url) notifier?.webhookDue();
  return row;
}
