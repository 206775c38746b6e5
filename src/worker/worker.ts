import type { JobsTable } from '../db/index.ts';
import { isRemoteEngine, type RemoteEngine } from '../engines/engine.ts';
import {
  claimNextJob,
  claimNextRemoteJob,
  findLostJobs,
  hasClaimableJob,
  purgeStaleRows,
  renewLeases,
  settleIfUnrunnable,
  sweepDeadlines,
} from '../jobs/index.ts';
import { newId } from '../lib/ids.ts';
import { startPump } from '../lib/pump.ts';
import { runJob, type AbortReason, type RunJobDeps } from './run-job.ts';

export interface WorkerDeps extends RunJobDeps {
  /** Local-engine jobs run at once (CPU-bound work). */
  concurrency: number;
  /** Remote tasks tracked at once: each is a pending poll timer, not a thread. */
  remoteConcurrency: number;
  pollIntervalMs: number;
}

export interface Worker {
  readonly id: string;
  /** Stops claiming, hands running jobs back to the queue, and resolves once they are out. */
  stop(): Promise<void>;
}

/** How often a worker checks that the jobs it runs are still its own (cancel lands within 2 s). */
const LEASE_CHECK_MS = 500;
const SWEEP_MS = 1000;
const PURGE_MS = 3_600_000;

/**
 * A worker: one pump claims jobs for in-process engines up to `concurrency`, another claims
 * jobs for remote engines up to `remoteConcurrency` (and each engine's global cap). Both are
 * woken in-process when a job is created here, and poll otherwise.
 */
export function startWorker(deps: WorkerDeps): Worker {
  const id = newId('wrk');
  const { handle, clock, logger } = deps;
  const running = new Map<string, AbortController>();
  const abort = (jobId: string, reason: AbortReason) => running.get(jobId)?.abort(reason);
  const localEngines = deps.engines.all().filter((e) => !isRemoteEngine(e)).map((e) => e.name);
  const remoteCaps = deps.engines
    .all()
    .filter(isRemoteEngine)
    .map((e: RemoteEngine) => ({ engine: e.name, maxConcurrency: e.maxConcurrency }));

  /** Claims until a runnable job turns up: claims past a deadline are settled on the way. */
  const nextFrom = (claim: (now: number) => Promise<JobsTable | null>) => async (): Promise<JobsTable | null> => {
    for (let i = 0; i < 10; i++) {
      const now = clock.now();
      const job = await claim(now);
      if (!job) return null;
      if (!(await settleIfUnrunnable(handle, deps.notifier, job, { ...deps.queue, now }))) return job;
    }
    return null;
  };

  const run = async (job: JobsTable) => {
    const controller = new AbortController();
    running.set(job.id, controller);
    try {
      await runJob(deps, id, job, controller.signal);
    } finally {
      running.delete(job.id);
    }
  };
  const onError = (error: unknown) => logger.error({ err: error }, 'worker error');
  const subscribe = (wake: () => void) => deps.notifier.on('jobQueued', wake);

  let lastClaimFound = false;
  const pumps = [
    startPump({
      concurrency: deps.concurrency,
      pollIntervalMs: deps.pollIntervalMs,
      next: nextFrom(async (now) => {
        // An idle worker only reads (a read never takes SQLite's write lock); while claims keep
        // finding work, that read would just cost a round trip per job.
        if (!lastClaimFound && !(await hasClaimableJob(handle, now, localEngines))) return null;
        const job = await claimNextJob(handle, id, now, deps.queue.leaseMs, localEngines);
        lastClaimFound = job !== null;
        return job;
      }),
      run,
      subscribe,
      onError,
    }),
  ];
  if (remoteCaps.length > 0) {
    pumps.push(
      startPump({
        concurrency: deps.remoteConcurrency,
        pollIntervalMs: deps.pollIntervalMs,
        next: nextFrom((now) => claimNextRemoteJob(handle, id, now, deps.queue.leaseMs, remoteCaps)),
        run,
        subscribe,
        onError,
      }),
    );
  }
  const offCancel = deps.notifier.on('jobCancelled', (jobId) => abort(jobId, 'cancelled'));

  // Lease upkeep: a cheap read every 500 ms notices cancels and takeovers made by other
  // processes; a renewal at a third of the lease means one missed beat never loses a job.
  let lastRenewAt = clock.now();
  let lastSweepAt = 0;
  let lastPurgeAt = 0;
  let ticking = false;
  const ticker = setInterval(async () => {
    if (ticking) return;
    ticking = true;
    try {
      const ids = [...running.keys()];
      const now = clock.now();
      const renew = now - lastRenewAt >= deps.queue.leaseMs / 3;
      const lost = renew ? await renewLeases(handle, id, ids, now, deps.queue.leaseMs) : await findLostJobs(handle, id, ids);
      if (renew) lastRenewAt = now;
      for (const jobId of lost) abort(jobId, 'lost');
      if (now - lastSweepAt >= SWEEP_MS) {
        lastSweepAt = now;
        await sweepDeadlines(handle, deps.notifier, { ...deps.queue, now });
      }
      if (now - lastPurgeAt >= PURGE_MS) {
        lastPurgeAt = now;
        await purgeStaleRows(handle, now);
      }
    } catch (error) {
      logger.warn({ err: error }, 'lease upkeep failed');
    } finally {
      ticking = false;
    }
  }, LEASE_CHECK_MS);
  ticker.unref();

  return {
    id,
    async stop() {
      offCancel();
      const stopping = Promise.all(pumps.map((p) => p.stop()));
      for (const jobId of running.keys()) abort(jobId, 'shutdown');
      await stopping;
      clearInterval(ticker);
    },
  };
}
