import type { DbHandle } from '../db/index.ts';
import { ERR } from '../lib/error-codes.ts';
import type { Notifier } from '../lib/notifier.ts';
import { settleJob } from './settle.ts';

export interface QueueOptions {
  leaseMs: number;
  maxAttempts: number;
  queueTtlMs: number;
  jobTimeoutMs: number;
}

export const DEADLINE_ERRORS = {
  queueTtl: { code: ERR.queue_ttl_exceeded, message: 'The job waited in the queue longer than ZHINIAN_QUEUE_TTL_SECONDS.' },
  timeout: { code: ERR.job_timeout, message: 'The job ran longer than ZHINIAN_JOB_TIMEOUT_SECONDS.' },
} as const;

/**
 * Deadlines for jobs no worker is looking at: queued past the queue TTL, running past the job
 * timeout (a worker that holds such a job notices at its next lease check and aborts).
 */
export async function sweepDeadlines(handle: DbHandle, notifier: Notifier | null, opts: QueueOptions & { now: number }): Promise<number> {
  const { db } = handle;
  const staleQueued = await db
    .selectFrom('jobs')
    .select('id')
    .where('run_at', '<', opts.now - opts.queueTtlMs)
    .where('status', '=', 'queued')
    .limit(500)
    .execute();
  const overdue = await db
    .selectFrom('jobs')
    .select('id')
    .where('status', '=', 'running')
    .where('started_at', '<', opts.now - opts.jobTimeoutMs)
    .limit(500)
    .execute();
  let settled = 0;
  for (const { id } of staleQueued) {
    if (await settleJob(handle, notifier, { jobId: id, transition: 'expireQueued', error: DEADLINE_ERRORS.queueTtl, now: opts.now })) settled++;
  }
  for (const { id } of overdue) {
    if (await settleJob(handle, notifier, { jobId: id, transition: 'expireRunning', error: DEADLINE_ERRORS.timeout, now: opts.now })) settled++;
  }
  return settled;
}
