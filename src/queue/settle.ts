import { insertAssetRows } from '../assets/repo.ts';
import type { AssetsTable, DbHandle, JobsTable } from '../db/index.ts';
import { retryOnSortKeyConflict } from '../db/index.ts';
import { eventFor, toJob } from '../contract/index.ts';
import type { JobErrorCode } from '../lib/error-codes.ts';
import type { Notifier } from '../lib/notifier.ts';
import { enqueueWebhook } from '../webhooks/outbox.ts';
import { transact } from './changes.ts';
import { applyTransition, TRANSITIONS, type Settlement, type Step } from './transitions.ts';
import { addToUsage } from './usage-rollup.ts';

export interface SettleInput {
  jobId: string;
  transition: Settlement;
  /** The worker making a leased settlement (its own verdict). */
  leaseOwner?: string;
  /** Only this client's job (the client's own cancel). */
  clientId?: string;
  error?: { code: JobErrorCode; message: string } | null;
  /** Output assets created together with the transition. */
  outputs?: AssetsTable[];
  now: number;
}

/**
 * Ends a job: its terminal transition and, in the same transaction, its output asset rows, its
 * webhook event (the outbox) and its count in the daily usage roll-up. Every terminal transition
 * (worker verdicts, the deadline sweep, cancel) comes through here. Returns null when the
 * transition was not allowed (cancelled meanwhile, lease lost, already finished): then nothing
 * was written, so a losing worker's outputs never become visible.
 */
export async function settleJob(handle: DbHandle, notifier: Notifier | null, input: SettleInput): Promise<JobsTable | null> {
  // Outputs take sort keys: on PostgreSQL a concurrent insert may take the same one, and then the
  // whole transition runs again (nothing of the failed attempt was committed).
  const row = await retryOnSortKeyConflict(() => transact(handle, notifier, (step) => settleWithin(step, input)));
  if (row?.webhook_url) notifier?.webhookDue();
  return row;
}

/** `settleJob`'s work, as a step of the caller's transaction (which wakes the webhook senders after it commits). */
export async function settleWithin(step: Step, input: SettleInput): Promise<JobsTable | null> {
  const status = TRANSITIONS[input.transition].to!;
  const outputs = input.outputs ?? [];
  const [updated] = await applyTransition(
    step,
    input.transition,
    { jobId: input.jobId, leaseOwner: input.leaseOwner, clientId: input.clientId },
    { error: input.error ?? null, outputIds: outputs.map((a) => a.id), now: input.now },
  );
  if (!updated) return null;
  const { tx } = step;
  await insertAssetRows(tx, step.dialect, outputs, input.now);
  if (updated.webhook_url) {
    await enqueueWebhook(tx, { jobId: updated.id, clientId: updated.client_id, url: updated.webhook_url, event: eventFor(status), job: toJob(updated), now: input.now });
  }
  // Last: the roll-up row is shared by the day's jobs of that client, so its lock is held briefly.
  const outputBytes = outputs.reduce((sum, a) => sum + Number(a.bytes), 0);
  await addToUsage(tx, updated, status, outputBytes);
  return updated;
}
