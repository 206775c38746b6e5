import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { AssetService, Store, UrlSigner } from '../assets/index.ts';
import { hashFile } from '../assets/index.ts';
import type { AssetsTable, DbHandle, JobsTable } from '../db/index.ts';
import { mayUseEngine, recordEngineFailure, recordEngineSuccess } from '../engines/circuit.ts';
import { Aborted, EngineError, isRemoteEngine, type Capability, type Engine, type EngineInput, type EngineOutput, type JobParams } from '../engines/engine.ts';
import type { EngineRegistry } from '../engines/registry.ts';
import { JOB_ERRORS, releaseJob, reportProgress, rerouteJob, saveEngineState, settleJob, type QueueOptions } from '../jobs/index.ts';
import type { Clock } from '../lib/clock.ts';
import { ERR, type JobErrorCode } from '../lib/error-codes.ts';
import { toError } from '../lib/errors.ts';
import { DEFAULT_MAX_INPUT_PIXELS } from '../media/probe.ts';
import type { Notifier } from '../lib/notifier.ts';
import { materializeInputs } from './inputs.ts';
import { runRemoteJob, type RemoteState } from './remote.ts';

export interface RunJobDeps {
  handle: DbHandle;
  store: Store;
  assets: AssetService;
  engines: EngineRegistry;
  notifier: Notifier;
  clock: Clock;
  logger: Logger;
  queue: QueueOptions;
  workDir: string;
  maxInputBytes: number;
  /**
   * ZHINIAN_MAX_INPUT_PIXELS: the most pixels an input image or a provider's result may declare
   * (checked from the header before decoding; also sharp's limitInputPixels). Default: sharp's.
   */
  maxInputPixels?: number;
  allowPrivateUrls: boolean;
  /** Signs keyless download links of input assets for remote engines. */
  signer: UrlSigner;
  signedUrlTtlSeconds: number;
  publicBaseUrl: () => string;
  /** Scales remote back-off waits (tests shorten them). */
  backoffScale?: number;
}

export type AbortReason = 'cancelled' | 'lost' | 'shutdown';

const PROGRESS_WRITE_MS = 500;
const RETRY_BACKOFF_MS = [2_000, 10_000, 30_000];
/** Provider trouble that says nothing about the request itself: another engine may well succeed. */
const PROVIDER_DOWN_CODES = new Set<JobErrorCode>([ERR.provider_error, ERR.provider_timeout, ERR.provider_auth, ERR.quota_exceeded]);
const EXTENSIONS: Record<string, string> = { 'image/png': '.png', 'image/jpeg': '.jpg', 'image/webp': '.webp', 'image/gif': '.gif', 'video/mp4': '.mp4', 'video/webm': '.webm' };

/**
 * Runs one claimed job to its end: picks the engine (skipping one whose circuit is open when
 * the client did not pin it), gets the outputs from a local or remote engine, and stores them
 * together with the terminal status — or hands the job back, moves it to the next engine,
 * schedules a retry, or fails it with a stable error code.
 */
export async function runJob(deps: RunJobDeps, workerId: string, job: JobsTable, signal: AbortSignal): Promise<void> {
  const { handle, clock } = deps;
  const log = deps.logger.child({ jobId: job.id, capability: job.capability, engine: job.engine, attempt: job.attempts });
  // Unique per run: a job moved to another engine may be claimed again by this same worker.
  const workDir = path.join(deps.workDir, `${job.id}-${randomBytes(6).toString('hex')}`);
  const remoteState = { submitted: job.engine_state !== null && JSON.parse(job.engine_state).phase === 'submitted' };
  let stored: AssetsTable[] = [];
  try {
    const engine = deps.engines.get(job.engine);
    if (!engine) throw new EngineError(ERR.engine_unavailable, `Engine "${job.engine}" is not available on this worker.`);
    if (isRemoteEngine(engine) && !remoteState.submitted && !(await mayUseEngine(handle, engine.name, clock.now()))) {
      if (await failOver(deps, workerId, job, log, `circuit of ${engine.name} is open`)) return;
    }
    await fsp.mkdir(workDir, { recursive: true });
    log.info('job started');
    const outputs = await produce(deps, workerId, job, engine, { signal, workDir, log, remoteState });
    if (signal.aborted) throw new Aborted();
    if (isRemoteEngine(engine)) await recordEngineSuccess(handle, engine.name, clock.now());
    for (const [i, output] of outputs.entries()) {
      const { bytes, sha256 } = await hashFile(output.path);
      const ext = EXTENSIONS[output.mimeType] ?? (path.extname(output.path) || '');
      stored.push(
        await deps.assets.prepare({
          file: { path: output.path, bytes, sha256 },
          clientId: job.client_id,
          name: `${job.id}${outputs.length > 1 ? `-${i + 1}` : ''}${ext}`,
          source: 'output',
          sourceUrl: output.sourceUrl ?? null,
          jobId: job.id,
          probe: output.probe,
        }),
      );
    }
    const settled = await settleJob(handle, deps.notifier, { jobId: job.id, from: ['running'], leaseOwner: workerId, status: 'succeeded', outputs: stored, now: clock.now() });
    if (!settled) throw new Aborted();
    stored = [];
    log.info({ outputAssetIds: settled.output_asset_ids }, 'job succeeded');
  } catch (error) {
    await handleFailure(deps, workerId, job, error, { signal, log, submitted: remoteState.submitted });
  } finally {
    // Outputs of a run that lost its job (cancelled, expired, taken over) never appear.
    await Promise.all(stored.map((row) => deps.store.delete(row.storage_key).catch(() => {})));
    await fsp.rm(workDir, { recursive: true, force: true }).catch(() => {});
  }
}

async function produce(
  deps: RunJobDeps,
  workerId: string,
  job: JobsTable,
  engine: Engine,
  run: { signal: AbortSignal; workDir: string; log: Logger; remoteState: { submitted: boolean } },
): Promise<EngineOutput[]> {
  const { handle, clock } = deps;
  const maxInputPixels = deps.maxInputPixels ?? DEFAULT_MAX_INPUT_PIXELS;
  let lastProgressAt = 0;
  let lastProgress = Number(job.progress ?? 0);
  const onProgress = (percent: number) => {
    const value = Math.max(0, Math.min(99, Math.floor(percent)));
    const now = clock.now();
    if (value <= lastProgress || now - lastProgressAt < PROGRESS_WRITE_MS) return;
    lastProgress = value;
    lastProgressAt = now;
    reportProgress(handle, job.id, workerId, value, now).catch((error) => run.log.warn({ err: error }, 'progress write failed'));
  };
  const materialize = (): Promise<EngineInput[]> =>
    materializeInputs(job, {
      assets: deps.assets,
      store: deps.store,
      workDir: run.workDir,
      maxBytes: deps.maxInputBytes,
      maxInputPixels,
      allowPrivateUrls: deps.allowPrivateUrls,
      signal: run.signal,
    });

  if (!isRemoteEngine(engine)) {
    const params: JobParams = JSON.parse(job.params);
    const inputs = await materialize();
    return engine.run({ jobId: job.id, capability: job.capability as Capability, prompt: job.prompt, params, inputs }, { signal: run.signal, onProgress, workDir: run.workDir, maxInputPixels });
  }
  return runRemoteJob(job, engine, {
    signal: run.signal,
    workDir: run.workDir,
    log: run.log,
    onProgress,
    materialize,
    publicUrlFor: (input) => {
      // Own assets get a keyless signed link; URL inputs are already public.
      if (input.sourceUrl) return input.sourceUrl;
      const { expires, signature } = deps.signer.sign(input.assetId!, deps.signedUrlTtlSeconds, clock.now());
      return `${deps.publicBaseUrl()}/api/v1/assets/${input.assetId}/download?expires=${expires}&signature=${signature}`;
    },
    saveState: async (state) => {
      const ok = await saveEngineState(handle, job.id, workerId, state);
      if (ok && state?.phase === 'submitted') run.remoteState.submitted = true;
      return ok;
    },
    allowPrivateUrls: deps.allowPrivateUrls,
    deadline: Number(job.started_at ?? clock.now()) + deps.queue.jobTimeoutMs,
    maxOutputBytes: Math.max(4 * deps.maxInputBytes, 256 * 1024 * 1024),
    maxInputPixels,
    backoffScale: deps.backoffScale,
  });
}

async function failOver(deps: RunJobDeps, workerId: string, job: JobsTable, log: Logger, why: string): Promise<boolean> {
  if (job.engine_pinned) return false;
  const next = deps.engines.nextAfter(job.capability as Capability, job.engine);
  if (!next) return false;
  if (!(await rerouteJob(deps.handle, { jobId: job.id, workerId, engine: next.name, now: deps.clock.now() }))) throw new Aborted();
  deps.notifier.jobQueued();
  log.warn({ to: next.name }, `job moved to the next engine: ${why}`);
  return true;
}

async function handleFailure(
  deps: RunJobDeps,
  workerId: string,
  job: JobsTable,
  thrown: unknown,
  run: { signal: AbortSignal; log: Logger; submitted: boolean },
): Promise<void> {
  const { handle, clock, log } = { ...deps, log: run.log };
  const now = clock.now();
  if (run.signal.aborted || thrown instanceof Aborted) {
    const reason = run.signal.reason as AbortReason | undefined;
    if (reason === 'shutdown') {
      await releaseJob(handle, { jobId: job.id, workerId, now, countAttempt: false });
      log.info('job handed back on shutdown');
    } else {
      log.info({ reason: reason ?? 'lost' }, 'job run aborted');
      await cancelAtProvider(deps, job.id, log);
    }
    return;
  }
  const error = thrown instanceof EngineError ? thrown : null;
  const engine = deps.engines.get(job.engine);
  if (error && engine && isRemoteEngine(engine) && PROVIDER_DOWN_CODES.has(error.code)) {
    await recordEngineFailure(handle, engine.name, now);
    // Nothing was started at the provider yet, so the job may move on without double work.
    if (!run.submitted && (await failOver(deps, workerId, job, log, `${error.code}: ${error.message}`))) return;
  }
  if (error?.retryable && job.attempts < deps.queue.maxAttempts) {
    const delayMs = RETRY_BACKOFF_MS[Math.min(job.attempts - 1, RETRY_BACKOFF_MS.length - 1)];
    await releaseJob(handle, { jobId: job.id, workerId, now, delayMs, countAttempt: true });
    log.warn({ code: error.code, delayMs }, `job will retry: ${error.message}`);
    return;
  }
  if (!error) log.error({ err: toError(thrown) }, 'job failed with an unexpected error');
  await settleJob(handle, deps.notifier, {
    jobId: job.id,
    from: ['running'],
    leaseOwner: workerId,
    status: error?.options.expired ? 'expired' : 'failed',
    // Unexpected errors stay in the log; the client sees a stable code, not internals.
    error: error ? { code: error.code, message: error.message } : { code: JOB_ERRORS.internal, message: 'The worker failed while running this job.' },
    now,
  });
  if (error) log.info({ code: error.code }, `job failed: ${error.message}`);
}

/**
 * A cancelled job that had a task at a provider: ask the provider to stop it too (Seedance can
 * while queued). Read from the row, so a cancel made by another process is covered. Best effort:
 * the job is cancelled either way.
 */
async function cancelAtProvider(deps: RunJobDeps, jobId: string, log: Logger): Promise<void> {
  const row = await deps.handle.db.selectFrom('jobs').select(['status', 'engine_state']).where('id', '=', jobId).executeTakeFirst();
  if (row?.status !== 'cancelled' || !row.engine_state) return;
  const state = JSON.parse(row.engine_state) as RemoteState;
  if (state.phase !== 'submitted') return;
  const engine = deps.engines.get(state.handle.engine);
  if (!engine || !isRemoteEngine(engine)) return;
  try {
    log.info({ taskId: state.handle.taskId, outcome: await engine.cancel(state.handle) }, 'remote task cancelled');
  } catch (error) {
    log.warn({ err: toError(error), taskId: state.handle.taskId }, 'provider cancel failed');
  }
}
