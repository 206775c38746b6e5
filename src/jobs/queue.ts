import { sql } from 'kysely';
import { withTransaction, type DbHandle, type JobsTable, type Tx } from '../db/index.ts';
import { JOB_ERRORS } from './lifecycle.ts';
import { WINDOW_MS } from './rate-limit.ts';
import { settleJob } from './settle.ts';
import type { Notifier } from '../lib/notifier.ts';

/**
 * The durable queue. A job is claimable while `run_at <= now`: from creation while queued,
 * and again once a running job's lease (run_at = lease expiry) lapses because its worker
 * died. Claiming is one conditional statement, so two workers never take the same job.
 */
export interface QueueOptions {
  leaseMs: number;
  maxAttempts: number;
  queueTtlMs: number;
  jobTimeoutMs: number;
}

export async function claimNextJob(
  handle: DbHandle,
  workerId: string,
  now: number,
  leaseMs: number,
  engines?: readonly string[],
): Promise<JobsTable | null> {
  return claimWith(handle.db, handle.dialect, workerId, now, leaseMs, engines);
}

async function claimWith(
  db: Tx,
  dialect: DbHandle['dialect'],
  workerId: string,
  now: number,
  leaseMs: number,
  engines?: readonly string[],
  /** Engines below their cap: only these may start a queued job (a takeover of a running one needs no free slot). */
  openEngines?: readonly string[],
) {
  if (engines?.length === 0) return null;
  let next = db.selectFrom('jobs').select('id').where('run_at', '<=', now);
  if (engines) next = next.where('engine', 'in', engines);
  if (openEngines) {
    const open = openEngines;
    next = next.where((eb) => {
      // Counted as busy already: running under a (lapsed) lease. A job handed back (lease_owner null) is not.
      const holdsSlot = eb.and([eb('status', '=', 'running'), eb('lease_owner', 'is not', null)]);
      return open.length > 0 ? eb.or([holdsSlot, eb('engine', 'in', open)]) : holdsSlot;
    });
  }
  next = next.orderBy('run_at').limit(1);
  // PostgreSQL: concurrent claimers skip each other's locked candidates instead of queueing on
  // them. SQLite has one writer at a time, which already makes the statement atomic.
  if (dialect === 'postgres') next = next.forUpdate().skipLocked();
  const row = await db
    .updateTable('jobs')
    .set((eb) => ({
      status: 'running',
      lease_owner: workerId,
      run_at: now + leaseMs,
      attempts: eb('attempts', '+', 1),
      started_at: eb.fn.coalesce('started_at', eb.val(now)),
      progress: eb.fn.coalesce('progress', eb.val(0)),
      updated_at: now,
    }))
    .where('id', '=', next)
    .where('run_at', '<=', now)
    .returningAll()
    .executeTakeFirst();
  return row ?? null;
}

/**
 * Claims a job for a remote engine that is below its concurrency cap. The cap holds across
 * every worker because the count and the claim run in one write transaction: the database is
 * the shared truth. SQLite's writer lock serialises such transactions by itself; PostgreSQL's
 * read committed would let two of them count the same free slot, so each first takes a
 * transaction-scoped advisory lock per engine (in name order: no deadlock between workers with
 * different engine sets). Claims for local engines never take these locks.
 */
export async function claimNextRemoteJob(
  handle: DbHandle,
  workerId: string,
  now: number,
  leaseMs: number,
  caps: readonly { engine: string; maxConcurrency: number }[],
): Promise<JobsTable | null> {
  if (caps.length === 0 || !(await hasClaimableJob(handle, now, caps.map((c) => c.engine)))) return null;
  return withTransaction(handle, async (tx) => {
    if (handle.dialect === 'postgres') {
      for (const engine of caps.map((c) => c.engine).sort()) {
        // Keyed by schema too: deployments sharing one database never wait on each other.
        await sql`select pg_advisory_xact_lock(hashtext(current_schema() || ${`:engine-cap:${engine}`}))`.execute(tx);
      }
    }
    const busy = await tx
      .selectFrom('jobs')
      .select(['engine', (eb) => eb.fn.countAll<number>().as('running')])
      .where('status', '=', 'running')
      .where('lease_owner', 'is not', null)
      .where('engine', 'in', caps.map((c) => c.engine))
      .groupBy('engine')
      .execute();
    const running = new Map(busy.map((b) => [b.engine, Number(b.running)]));
    const open = caps.filter((c) => (running.get(c.engine) ?? 0) < c.maxConcurrency).map((c) => c.engine);
    // A running job whose lease lapsed (its worker died) is counted above and keeps its slot:
    // taking it over leaves the count as it is, so it is claimable even at the cap. Otherwise
    // dead workers' jobs could hold every slot of an engine forever.
    return claimWith(tx, handle.dialect, workerId, now, leaseMs, caps.map((c) => c.engine), open);
  });
}

/** Cheap check before claiming, so idle pollers read instead of write. */
export async function hasClaimableJob(handle: DbHandle, now: number, engines?: readonly string[]): Promise<boolean> {
  if (engines?.length === 0) return false;
  let query = handle.db.selectFrom('jobs').select('id').where('run_at', '<=', now);
  if (engines) query = query.where('engine', 'in', engines);
  const row = await query.limit(1).executeTakeFirst();
  return row !== undefined;
}

/** Moves a job that has not started remote work to another engine, ready to be claimed at once. */
export async function rerouteJob(handle: DbHandle, input: { jobId: string; workerId: string; engine: string; now: number }): Promise<boolean> {
  const res = await handle.db
    .updateTable('jobs')
    .set((eb) => ({ engine: input.engine, engine_state: null, lease_owner: null, run_at: input.now, attempts: eb('attempts', '-', 1), updated_at: input.now }))
    .where('id', '=', input.jobId)
    .where('lease_owner', '=', input.workerId)
    .where('status', '=', 'running')
    .executeTakeFirst();
  return Number(res.numUpdatedRows) === 1;
}

/**
 * Why a just-claimed job must not run: too many attempts (its workers keep dying), or a
 * deadline passed while it waited. Settles it and returns true in that case.
 */
export async function settleIfUnrunnable(
  handle: DbHandle,
  notifier: Notifier | null,
  job: JobsTable,
  opts: QueueOptions & { now: number },
): Promise<boolean> {
  const base = { jobId: job.id, from: ['running'] as const, leaseOwner: job.lease_owner ?? '', now: opts.now };
  if (job.attempts > opts.maxAttempts) {
    await settleJob(handle, notifier, {
      ...base,
      status: 'failed',
      error: { code: JOB_ERRORS.workerLost, message: `The job's worker stopped ${opts.maxAttempts} times before finishing it.` },
    });
    return true;
  }
  // The queue TTL concerns the wait before a job first starts (the claim just set started_at),
  // not a job handed back on shutdown after it started in time.
  const createdMs = Math.floor(Number(job.created_at_us) / 1000);
  if (Number(job.started_at) === opts.now && opts.now - createdMs > opts.queueTtlMs) {
    await settleJob(handle, notifier, {
      ...base,
      status: 'expired',
      error: { code: JOB_ERRORS.queueTtl, message: 'The job waited in the queue longer than ZHINIAN_QUEUE_TTL_SECONDS.' },
    });
    return true;
  }
  if (job.started_at !== null && opts.now - Number(job.started_at) > opts.jobTimeoutMs) {
    await settleJob(handle, notifier, {
      ...base,
      status: 'expired',
      error: { code: JOB_ERRORS.timeout, message: 'The job ran longer than ZHINIAN_JOB_TIMEOUT_SECONDS.' },
    });
    return true;
  }
  return false;
}

/**
 * Extends the leases this worker holds and returns the ids it no longer holds (cancelled,
 * expired, or taken over after a stall) so their runs can be aborted.
 */
export async function renewLeases(handle: DbHandle, workerId: string, jobIds: string[], now: number, leaseMs: number): Promise<string[]> {
  if (jobIds.length === 0) return [];
  const kept = await handle.db
    .updateTable('jobs')
    .set({ run_at: now + leaseMs })
    .where('id', 'in', jobIds)
    .where('lease_owner', '=', workerId)
    .where('status', '=', 'running')
    .returning('id')
    .execute();
  const keptIds = new Set(kept.map((r) => r.id));
  return jobIds.filter((id) => !keptIds.has(id));
}

/** Read-only variant of `renewLeases`, cheap enough to run every few hundred milliseconds. */
export async function findLostJobs(handle: DbHandle, workerId: string, jobIds: string[]): Promise<string[]> {
  if (jobIds.length === 0) return [];
  const held = await handle.db
    .selectFrom('jobs')
    .select('id')
    .where('id', 'in', jobIds)
    .where('lease_owner', '=', workerId)
    .where('status', '=', 'running')
    .execute();
  const heldIds = new Set(held.map((r) => r.id));
  return jobIds.filter((id) => !heldIds.has(id));
}

export async function reportProgress(handle: DbHandle, jobId: string, workerId: string, progress: number, now: number): Promise<void> {
  await handle.db
    .updateTable('jobs')
    .set({ progress, updated_at: now })
    .where('id', '=', jobId)
    .where('lease_owner', '=', workerId)
    .where('status', '=', 'running')
    .execute();
}

/** Saves engine resume state (a remote task handle) while the lease is held. */
export async function saveEngineState(handle: DbHandle, jobId: string, workerId: string, state: unknown): Promise<boolean> {
  const res = await handle.db
    .updateTable('jobs')
    .set({ engine_state: state === null ? null : JSON.stringify(state) })
    .where('id', '=', jobId)
    .where('lease_owner', '=', workerId)
    .where('status', '=', 'running')
    .executeTakeFirst();
  return Number(res.numUpdatedRows) === 1;
}

/**
 * Hands a job back: on graceful shutdown (the attempt does not count), or to retry after a
 * transient engine error (it counts, and waits `delayMs`).
 */
export async function releaseJob(
  handle: DbHandle,
  input: { jobId: string; workerId: string; now: number; delayMs?: number; countAttempt: boolean },
): Promise<void> {
  await handle.db
    .updateTable('jobs')
    .set((eb) => ({
      lease_owner: null,
      run_at: input.now + (input.delayMs ?? 0),
      attempts: input.countAttempt ? eb.ref('attempts') : eb('attempts', '-', 1),
      updated_at: input.now,
    }))
    .where('id', '=', input.jobId)
    .where('lease_owner', '=', input.workerId)
    .where('status', '=', 'running')
    .execute();
}

/**
 * Deadlines for jobs no worker is looking at: queued past the queue TTL, running past the
 * job timeout (a worker that holds such a job notices at its next lease check and aborts).
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
    const row = await settleJob(handle, notifier, {
      jobId: id,
      from: ['queued'],
      status: 'expired',
      error: { code: JOB_ERRORS.queueTtl, message: 'The job waited in the queue longer than ZHINIAN_QUEUE_TTL_SECONDS.' },
      now: opts.now,
    });
    if (row) settled++;
  }
  for (const { id } of overdue) {
    const row = await settleJob(handle, notifier, {
      jobId: id,
      from: ['running'],
      status: 'expired',
      error: { code: JOB_ERRORS.timeout, message: 'The job ran longer than ZHINIAN_JOB_TIMEOUT_SECONDS.' },
      now: opts.now,
    });
    if (row) settled++;
  }
  return settled;
}

/**
 * Forgets idempotency keys after two days (the contract promises at least one) and rate-limit
 * windows no longer read (only the current and the previous minute are).
 */
export async function purgeStaleRows(handle: DbHandle, now: number): Promise<void> {
  await handle.db.deleteFrom('idempotency_keys').where('created_at', '<', now - 2 * 86_400_000).execute();
  await handle.db.deleteFrom('rate_windows').where('window_start', '<', now - 2 * WINDOW_MS).execute();
}
