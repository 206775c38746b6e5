import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { AssetService, Store } from '../assets/index.ts';
import { hashFile } from '../assets/index.ts';
import type { AssetsTable, DbHandle, JobsTable } from '../db/index.ts';
import { Aborted, EngineError, isRemoteEngine, type Capability, type JobParams } from '../engines/engine.ts';
import type { EngineRegistry } from '../engines/registry.ts';
import {
  claimNextJob,
  findLostJobs,
  hasClaimableJob,
  JOB_ERRORS,
  releaseJob,
  renewLeases,
  reportProgress,
  settleIfUnrunnable,
  settleJob,
  purgeIdempotencyKeys,
  sweepDeadlines,
  type QueueOptions,
} from '../jobs/index.ts';
import type { Clock } from '../lib/clock.ts';
import { toError } from '../lib/errors.ts';
import { newId } from '../lib/ids.ts';
import type { Notifier } from '../lib/notifier.ts';
import { startPump } from '../lib/pump.ts';
import { materializeInputs } from './inputs.ts';

export interface WorkerDeps {
  handle: DbHandle;
  store: Store;
  assets: AssetService;
  engines: EngineRegistry;
  notifier: Notifier;
  clock: Clock;
  logger: Logger;
  queue: QueueOptions;
  concurrency: number;
  pollIntervalMs: number;
  workDir: string;
  maxInputBytes: number;
  allowPrivateUrls: boolean;
}

export interface Worker {
  readonly id: string;
  /** Stops claiming, hands running jobs back to the queue, and resolves once they are out. */
  stop(): Promise<void>;
}

type AbortReason = 'cancelled' | 'lost' | 'shutdown';

/** How often a worker checks that the jobs it runs are still its own (cancel lands within 2 s). */
const LEASE_CHECK_MS = 500;
const SWEEP_MS = 1000;
const PURGE_MS = 3_600_000;
const PROGRESS_WRITE_MS = 500;
const RETRY_BACKOFF_MS = [2_000, 10_000, 30_000];

export function startWorker(deps: WorkerDeps): Worker {
  const id = newId('wrk');
  const { handle, clock, logger } = deps;
  const running = new Map<string, AbortController>();
  const abort = (jobId: string, reason: AbortReason) => running.get(jobId)?.abort(reason);

  async function next(): Promise<JobsTable | null> {
    // Several claims in a row may be unrunnable (deadline passed); settle those and go on.
    for (let i = 0; i < 10; i++) {
      const now = clock.now();
      if (!(await hasClaimableJob(handle, now))) return null;
      const job = await claimNextJob(handle, id, now, deps.queue.leaseMs);
      if (!job) return null;
      if (!(await settleIfUnrunnable(handle, deps.notifier, job, { ...deps.queue, now }))) return job;
    }
    return null;
  }

  async function run(job: JobsTable): Promise<void> {
    const controller = new AbortController();
    running.set(job.id, controller);
    const log = logger.child({ jobId: job.id, capability: job.capability, attempt: job.attempts });
    const workDir = path.join(deps.workDir, `${job.id}-${job.attempts}-${id.slice(-6)}`);
    let lastProgressAt = 0;
    let lastProgress = Number(job.progress ?? 0);
    const onProgress = (percent: number) => {
      const value = Math.max(0, Math.min(99, Math.floor(percent)));
      const now = clock.now();
      if (value <= lastProgress || now - lastProgressAt < PROGRESS_WRITE_MS) return;
      lastProgress = value;
      lastProgressAt = now;
      reportProgress(handle, job.id, id, value, now).catch((error) => log.warn({ err: error }, 'progress write failed'));
    };
    let stored: AssetsTable[] = [];
    try {
      const engine = deps.engines.get(job.engine);
      if (!engine || isRemoteEngine(engine)) throw new EngineError('engine_unavailable', `Engine "${job.engine}" is not available on this worker.`);
      await fsp.mkdir(workDir, { recursive: true });
      log.info('job started');
      const inputs = await materializeInputs(job, {
        assets: deps.assets,
        store: deps.store,
        workDir,
        maxBytes: deps.maxInputBytes,
        allowPrivateUrls: deps.allowPrivateUrls,
        signal: controller.signal,
      });
      const params: JobParams = JSON.parse(job.params);
      const outputs = await engine.run(
        { jobId: job.id, capability: job.capability as Capability, prompt: job.prompt, params, inputs },
        { signal: controller.signal, onProgress, workDir },
      );
      if (controller.signal.aborted) throw new Aborted();
      for (const [i, output] of outputs.entries()) {
        const { bytes, sha256 } = await hashFile(output.path);
        const ext = path.extname(output.path) || (output.kind === 'video' ? '.mp4' : '.png');
        stored.push(
          await deps.assets.prepare({
            file: { path: output.path, bytes, sha256 },
            clientId: job.client_id,
            name: `${job.id}${outputs.length > 1 ? `-${i + 1}` : ''}${ext}`,
            source: 'output',
            jobId: job.id,
          }),
        );
      }
      const now = clock.now();
      const settled = await settleJob(handle, deps.notifier, {
        jobId: job.id,
        from: ['running'],
        leaseOwner: id,
        status: 'succeeded',
        outputs: stored,
        now,
      });
      if (!settled) throw new Aborted();
      stored = [];
      log.info({ outputAssetIds: settled.output_asset_ids }, 'job succeeded');
    } catch (error) {
      await handleFailure(job, error, controller.signal, log);
    } finally {
      running.delete(job.id);
      // Outputs of a run that lost its job (cancelled, expired, taken over) never appear.
      await Promise.all(stored.map((row) => deps.store.delete(row.storage_key).catch(() => {})));
      await fsp.rm(workDir, { recursive: true, force: true }).catch(() => {});
    }
  }

  async function handleFailure(job: JobsTable, thrown: unknown, signal: AbortSignal, log: Logger): Promise<void> {
    const now = clock.now();
    if (signal.aborted || thrown instanceof Aborted) {
      const reason = signal.reason as AbortReason | undefined;
      if (reason === 'shutdown') {
        await releaseJob(handle, { jobId: job.id, workerId: id, now, countAttempt: false });
        log.info('job handed back on shutdown');
      } else {
        log.info({ reason: reason ?? 'lost' }, 'job run aborted');
      }
      return;
    }
    const error = thrown instanceof EngineError ? thrown : null;
    if (error?.options.retryable && job.attempts < deps.queue.maxAttempts) {
      const delayMs = RETRY_BACKOFF_MS[Math.min(job.attempts - 1, RETRY_BACKOFF_MS.length - 1)];
      await releaseJob(handle, { jobId: job.id, workerId: id, now, delayMs, countAttempt: true });
      log.warn({ code: error.code, delayMs }, `job will retry: ${error.message}`);
      return;
    }
    if (!error) log.error({ err: toError(thrown) }, 'job failed with an unexpected error');
    await settleJob(handle, deps.notifier, {
      jobId: job.id,
      from: ['running'],
      leaseOwner: id,
      status: error?.options.expired ? 'expired' : 'failed',
      // Unexpected errors stay in the log; the client sees a stable code, not internals.
      error: error ? { code: error.code, message: error.message } : { code: JOB_ERRORS.internal, message: 'The worker failed while running this job.' },
      now,
    });
    if (error) log.info({ code: error.code }, `job failed: ${error.message}`);
  }

  const pump = startPump({
    concurrency: deps.concurrency,
    pollIntervalMs: deps.pollIntervalMs,
    next,
    run,
    subscribe: (wake) => deps.notifier.on('jobQueued', wake),
    onError: (error) => logger.error({ err: error }, 'worker error'),
  });
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
        await purgeIdempotencyKeys(handle, now);
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
      const stopping = pump.stop();
      for (const jobId of running.keys()) abort(jobId, 'shutdown');
      await stopping;
      clearInterval(ticker);
    },
  };
}
