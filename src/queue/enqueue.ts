import { nextSortKey, type DbHandle, type JobsTable, type Tx } from '../db/index.ts';
import { fairKeys } from './fair-order.ts';
import type { Capability, JobParams } from '../contract/index.ts';

export interface NewJob {
  id: string;
  clientId: string;
  capability: Capability;
  prompt: string | null;
  params: JobParams;
  inputAssetIds: string[];
  engine: string;
  enginePinned: boolean;
  webhookUrl: string | null;
  metadata: Record<string, unknown> | null;
  /** The client's fairness weight (queue/fair-order.ts). */
  weight: number;
  now: number;
}

/**
 * Inserts a job, queued and claimable at once; its per-client sort key is taken here, and its
 * place in the fair order too unless given (a batch passes keys from one `fairKeys(tx)`).
 */
export async function insertQueuedJob(tx: Tx, dialect: DbHandle['dialect'], job: NewJob, opts: { fairKey?: number } = {}): Promise<JobsTable> {
  const fairKey = opts.fairKey ?? (await fairKeys(tx).next(job.engine, job.clientId, job.weight));
  return tx
    .insertInto('jobs')
    .values({
      id: job.id,
      client_id: job.clientId,
      capability: job.capability,
      status: 'queued',
      prompt: job.prompt,
      params: JSON.stringify(job.params),
      input_asset_ids: JSON.stringify(job.inputAssetIds),
      output_asset_ids: '[]',
      error_code: null,
      error_message: null,
      progress: null,
      engine: job.engine,
      webhook_url: job.webhookUrl,
      metadata: job.metadata === null ? null : JSON.stringify(job.metadata),
      created_at_us: nextSortKey(dialect, 'jobs', job.clientId, job.now),
      updated_at: job.now,
      started_at: null,
      finished_at: null,
      attempts: 0,
      run_at: job.now,
      lease_owner: null,
      engine_state: null,
      engine_pinned: job.enginePinned ? 1 : 0,
      fair_key: fairKey,
      version: 0,
      waiting: null,
      waiting_until: null,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}
