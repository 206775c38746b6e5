import { isRemoteEngine, type RemoteEngine } from '../engines/engine.ts';
import { CAPABILITIES } from '../contract/index.ts';
import { purgeStaleRows } from '../jobs/index.ts';
import { newId } from '../lib/ids.ts';
import {
  checkClaimed,
  pruneJobChanges,
  claimNextJob,
  findLostJobs,
  hasClaimableJob,
  renewLeases,
  rerouteFromOpenCircuits,
  settleJob,
  sweepDeadlines,
  type ClaimedJob,
  type ClaimOptions,
} from '../queue/index.ts';
import type { ClientDirectory } from '../clients/index.ts';
import { startPump } from '../lib/pump.ts';
import { runJob, type AbortReason, type RunJobDeps } from './run-job.ts';

export interface WorkerDeps extends RunJobDeps {
  /** Local-engine jobs run at once (CPU-bound work). */
  concurrency: number;
  /** Remote tasks tracked at once: each is a pending poll timer, not a thread. */
  remoteConcurrency: number;
  pollIntervalMs: number;
  /** Per-client running caps. */
  clients: ClientDirectory;
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
  const localEngines = deps.engines
    .all()
    .filter((e) => !isRemoteEngine(e))
    .map((e) => ({ engine: e.name }));
  const remoteCaps = deps.engines
    .all()
    .filter(isRemoteEngine)
    .map((e: RemoteEngine) => ({ engine: e.name, maxConcurrency: e.maxConcurrency }));

  /**
   * A claim function for one pump. An idle pump only reads (a read never takes SQLite's write
   * lock); while claims keep finding work, that read would just cost a round trip per job. The
   * engine tried first turns after every claim, so no engine's queue waits behind another's.
   */
  const claimer = (engines: ClaimOptions['engines']) => {
    const names = engines.map((e) => e.engine);
    let lastClaimFound = false;
    let turn = 0;
    return async (now: number): Promise<ClaimedJob | null> => {
      if (!lastClaimFound && !(await hasClaimableJob(handle, now, names))) return null;
      const clientCaps = { defaultMaxRunning: deps.clients.defaults.maxRunning, active: await deps.clients.anyRunningCap() };
      const job = await claimNextJob(handle, { notifier: deps.notifier, workerId: id, now, leaseMs: deps.queue.leaseMs, engines, clientCaps, turn: turn++ });
      lastClaimFound = job !== null;
      return job;
    };
  };

  /** Claims until a runnable job turns up: claims past a deadline (or their attempts) are settled on the way. */
  const nextFrom = (claim: (now: number) => Promise<ClaimedJob | null>) => async (): Promise<ClaimedJob | null> => {
    for (let i = 0; i < 10; i++) {
      const now = clock.now();
      const job = await claim(now);
      if (!job) return null;
      const ending = checkClaimed(job, { ...deps.queue, now });
      if (!ending) return job;
      await settleJob(handle, deps.notifier, { jobId: job.id, leaseOwner: job.leaseOwner, ...ending, now });
    }
    return null;
  };

  const run = async (job: ClaimedJob) => {
    const controller = new AbortController();
    running.set(job.id, controller);
    try {
      await runJob(deps, job, controller.signal);
    } finally {
      running.delete(job.id);
    }
  };
  const onError = (error: unknown) => logger.error({ err: error }, 'worker error');
  const subscribe = (wake: () => void) => deps.notifier.on('jobQueued', wake);

  const nextEngine = (capability: string, engine: string) => deps.engines.nextAfter(capability as (typeof CAPABILITIES)[number], engine)?.name ?? null;

  const pumps = [
    startPump({
      concurrency: deps.concurrency,
      pollIntervalMs: deps.pollIntervalMs,
      next: nextFrom(claimer(localEngines)),
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
        next: nextFrom(claimer(remoteCaps)),
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
      const lost = renew ? await renewLeases(handle, { workerId: id, jobIds: ids, now, leaseMs: deps.queue.leaseMs }) : await findLostJobs(handle, id, ids);
      if (renew) lastRenewAt = now;
      for (const jobId of lost) abort(jobId, 'lost');
      if (now - lastSweepAt >= SWEEP_MS) {
        lastSweepAt = now;
        await sweepDeadlines(handle, deps.notifier, { ...deps.queue, now });
        await pruneJobChanges(handle, now);
        if (remoteCaps.length > 0 && (await rerouteFromOpenCircuits(handle, { now, capabilities: CAPABILITIES, nextEngine, notifier: deps.notifier })) > 0)
          deps.notifier.jobQueued();
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
