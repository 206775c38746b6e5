import type { AttemptOutcome, JobAttempt } from '../contract/index.ts';
import type { Tx } from '../db/index.ts';
import { iso } from '../lib/clock.ts';

/**
 * A job's history: one entry per time a worker took it, oldest first, as the transitions wrote
 * it (transitions.ts). CONTRACT "Why a job waits, and its history".
 */
export async function jobAttemptsOf(db: Tx, jobId: string): Promise<JobAttempt[]> {
  const rows = await db.selectFrom('job_attempts').selectAll().where('job_id', '=', jobId).orderBy('n').execute();
  return rows.map((r) => ({
    n: Number(r.n),
    engine: r.engine,
    startedAt: iso(Number(r.started_at)),
    endedAt: r.ended_at === null ? null : iso(Number(r.ended_at)),
    outcome: r.outcome as AttemptOutcome,
    error: r.error_code === null ? null : { code: r.error_code, message: r.error_message ?? '' },
    providerTaskId: r.provider_task_id,
  }));
}
