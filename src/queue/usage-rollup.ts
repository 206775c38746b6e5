import type { JobsTable, Tx } from '../db/index.ts';
import type { TerminalStatus } from '../contract/index.ts';

const DAY_US = 86_400_000_000;

/** The UTC day (days since 1970-01-01) a job counts on in the usage: the day it was created. */
export const usageDay = (createdAtUs: number): number => Math.floor(createdAtUs / DAY_US);

/**
 * Counts an ended job in `usage_daily`, inside the transaction that ended it (queue/settle.ts
 * is the only place a job ends, and calls this), so the roll-up and the jobs never disagree:
 * both commit or neither does. The job counts on the UTC day it was created, under the engine
 * it ended on (a rerouted job under its last engine), once: the conditional update that ended
 * it matches a job only while it is not yet terminal. `jobs` counts ended jobs only, so a day's
 * row grows while its jobs finish (a queued or running job is not counted yet: counting it at
 * creation would put it under an engine it may never run on).
 */
export async function addToUsage(
  tx: Tx,
  job: Pick<JobsTable, 'client_id' | 'capability' | 'engine' | 'created_at_us'>,
  status: TerminalStatus,
  outputBytes: number,
): Promise<void> {
  const one = (s: TerminalStatus) => (s === status ? 1 : 0);
  await tx
    .insertInto('usage_daily')
    .values({
      day: usageDay(Number(job.created_at_us)),
      client_id: job.client_id,
      capability: job.capability,
      engine: job.engine,
      jobs: 1,
      succeeded: one('succeeded'),
      failed: one('failed'),
      expired: one('expired'),
      cancelled: one('cancelled'),
      output_bytes: outputBytes,
    })
    .onConflict((oc) =>
      oc.columns(['day', 'client_id', 'capability', 'engine']).doUpdateSet((eb) => ({
        jobs: eb('usage_daily.jobs', '+', eb.ref('excluded.jobs')),
        succeeded: eb('usage_daily.succeeded', '+', eb.ref('excluded.succeeded')),
        failed: eb('usage_daily.failed', '+', eb.ref('excluded.failed')),
        expired: eb('usage_daily.expired', '+', eb.ref('excluded.expired')),
        cancelled: eb('usage_daily.cancelled', '+', eb.ref('excluded.cancelled')),
        output_bytes: eb('usage_daily.output_bytes', '+', eb.ref('excluded.output_bytes')),
      })),
    )
    .execute();
}
