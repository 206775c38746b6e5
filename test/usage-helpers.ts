import assert from 'node:assert/strict';
import { sql } from 'kysely';
import type { TerminalStatus } from '../src/contract/index.ts';
import { ERR } from '../src/lib/error-codes.ts';
import type { AssetsTable, DbHandle } from '../src/db/index.ts';
import { transact } from '../src/queue/changes.ts';
import { settleWithin } from '../src/queue/settle.ts';
import type { Settlement } from '../src/queue/transitions.ts';
import { claimJob, queuedJobRow } from './helpers.ts';

/** The worker name ended jobs are "held" by while they are settled. */
const SEED_WORKER = 'usage-seed-worker';

/** The settlement that ends a job with `status` from `from`. */
const SETTLEMENT: Record<TerminalStatus, Record<'queued' | 'running', Settlement | null>> = {
  succeeded: { queued: null, running: 'succeed' },
  failed: { queued: null, running: 'fail' },
  expired: { queued: 'expireQueued', running: 'expireRunning' },
  cancelled: { queued: 'cancel', running: 'cancel' },
};

/**
 * A job created at `createdAtUs` (its id's last 25 characters name its outputs: at most 10), then ended through queue/settle.ts as the platform ends jobs
 * (so it is counted in the usage roll-up), with output assets of the given sizes.
 */
export async function endedJob(
  handle: DbHandle,
  job: { id: string; clientId: string; engine: string; createdAtUs: number; status: TerminalStatus; outputBytes?: number[]; from?: 'queued' | 'running'; capability?: string },
): Promise<void> {
  const from = job.from ?? (job.status === 'succeeded' || job.status === 'failed' ? 'running' : 'queued');
  const transition = SETTLEMENT[job.status][from];
  assert.ok(transition, `${job.status} from ${from}`);
  const running = from === 'running';
  const outputs: AssetsTable[] = (job.outputBytes ?? []).map((bytes, i) => ({
    id: `asset_${job.id.slice(5)}${i}`,
    client_id: job.clientId,
    kind: 'image',
    name: 'out.png',
    mime_type: 'image/png',
    bytes,
    sha256: '0'.repeat(64),
    width: 1,
    height: 1,
    duration_seconds: null,
    source: 'output',
    source_url: null,
    job_id: job.id,
    storage_key: `${job.id}-${i}`,
    created_at_us: 0,
  }));
  // Created, taken by a worker if it ran, and ended, in one transaction: no worker of a running
  // stack sees it in between (it may run the job's engine).
  const row = await transact(handle, null, async (step) => {
    await step.tx
      .insertInto('jobs')
      .values(
        queuedJobRow({
          id: job.id,
          engine: job.engine,
          created_at_us: job.createdAtUs,
          run_at: Date.now(),
          client_id: job.clientId,
          capability: job.capability ?? 'image.generate',
        }),
      )
      .execute();
    if (running) await claimJob(step, job.id, { workerId: SEED_WORKER });
    return settleWithin(step, {
      jobId: job.id,
      transition,
      leaseOwner: running ? SEED_WORKER : undefined,
      error: job.status === 'succeeded' || job.status === 'cancelled' ? null : { code: ERR.internal_error, message: 'seeded' },
      outputs,
      now: Math.floor(job.createdAtUs / 1000) + 1000,
    });
  });
  assert.equal(row?.status, job.status, `${job.id} ended ${job.status}`);
}

/**
 * Usage as a scan of the jobs gives it (what the console computed before the roll-up), over
 * the jobs that have ended: the reference the roll-up must equal.
 */
export async function usageByScan(handle: DbHandle, fromDay: number, toDay: number) {
  const DAY_US = sql.lit(86_400_000_000);
  const count = (status: string) => sql`sum(case when j.status = ${status} then 1 else 0 end)`;
  const { rows } = await sql<Record<string, string | number>>`
    select j.created_at_us / ${DAY_US} as day, j.client_id as client_id, j.capability as capability, j.engine as engine,
      count(*) as jobs, ${count('succeeded')} as succeeded, ${count('failed')} as failed, ${count('expired')} as expired,
      ${count('cancelled')} as cancelled, coalesce(sum(o.bytes), 0) as output_bytes
    from jobs j
    left join (select job_id, sum(bytes) as bytes from assets where source = 'output' and job_id is not null group by job_id) o on o.job_id = j.id
    where j.status in ('succeeded', 'failed', 'expired', 'cancelled')
      and j.created_at_us >= ${fromDay * 86_400_000_000} and j.created_at_us < ${(toDay + 1) * 86_400_000_000}
    group by 1, 2, 3, 4`.execute(handle.db);
  return rows
    .map((r) => ({
      day: new Date(Number(r.day) * 86_400_000).toISOString().slice(0, 10),
      clientId: String(r.client_id),
      capability: String(r.capability),
      engine: String(r.engine),
      jobs: Number(r.jobs),
      succeeded: Number(r.succeeded),
      failed: Number(r.failed),
      expired: Number(r.expired),
      cancelled: Number(r.cancelled),
      outputBytes: Number(r.output_bytes),
    }))
    .sort((a, b) => cmp(a.day, b.day) || cmp(a.clientId, b.clientId) || cmp(a.capability, b.capability) || cmp(a.engine, b.engine));
}

/** Code-unit order, as the console sorts. */
function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
