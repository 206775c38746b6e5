import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { AssetService, Store, UrlSigner } from '../assets/index.ts';
import { hashFile } from '../assets/index.ts';
import type { AssetsTable, DbHandle } from '../db/index.ts';
import { EngineError, isRemoteEngine, type Engine, type EngineInput, type EngineOutput } from '../engines/engine.ts';
import { Aborted } from '../lib/abort.ts';
import type { EngineRegistry } from '../engines/registry.ts';
import type { Clock } from '../lib/clock.ts';
import { ERR } from '../lib/error-codes.ts';
import { toError } from '../lib/errors.ts';
import type { Notifier } from '../lib/notifier.ts';
import { storableText } from '../lib/storable-text.ts';
import { DEFAULT_MAX_INPUT_PIXELS } from '../media/probe.ts';
import {
  decideAfterRun,
  handBackJob,
  isSubmitted,
  noteProviderWait,
  parseEngineState,
  recordEngineFailure,
  recordEngineSuccess,
  reportProgress,
  rerouteJob,
  retryJobLater,
  saveEngineState,
  settleJob,
  timeoutAt,
  type ClaimedJob,
  type Decision,
  type JobError,
  type QueueOptions,
  type RunOutcome,
} from '../queue/index.ts';
import { materializeInputs } from './inputs.ts';
import { runRemoteJob } from './remote.ts';

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
const EXTENSIONS: Record<string, string> = { 'image/png': '.png', 'image/jpeg': '.jpg', 'image/webp': '.webp', 'image/gif': '.gif', 'video/mp4': '.mp4', 'video/webm': '.webm' };

/**
 * Runs one claimed job to its end: gets the outputs from a local or remote engine and stores
 * them together with the terminal status; any other ending is decided by `decideAfterRun`
 * (hand back, let go, move to the next engine, retry later, or fail) and carried out here.
 */
export async function runJob(deps: RunJobDeps, job: ClaimedJob, signal: AbortSignal): Promise<void> {
  const { handle, clock } = deps;
  const log = deps.logger.child({ jobId: job.id, capability: job.capability, engine: job.engine, attempt: job.attempts });
  // Unique per run: a job moved to another engine may be claimed again by this same worker.
  const workDir = path.join(deps.workDir, `${job.id}-${randomBytes(6).toString('hex')}`);
  const run = { signal, workDir, log, submitted: isSubmitted(job) };
  const engine = deps.engines.get(job.engine);
  let stored: AssetsTable[] = [];
  try {
    if (!engine) throw new EngineError(ERR.engine_unavailable, `Engine "${job.engine}" is not available on this worker.`);
    await fsp.mkdir(workDir, { recursive: true });
    log.info('job started');
    const outputs = await produce(deps, job, engine, run);
    if (signal.aborted) throw new Aborted();
    if (isRemoteEngine(engine)) await recordEngineSuccess(handle, engine.name, clock.now());
    for (const [i, output] of outputs.entries()) {
      const { bytes, sha256 } = await hashFile(output.path);
      const ext = EXTENSIONS[output.mimeType] ?? (path.extname(output.path) || '');
      stored.push(
        await deps.assets.prepare({
          file: { path: output.path, bytes, sha256 },
          clientId: job.clientId,
          name: `${job.id}${outputs.length > 1 ? `-${i + 1}` : ''}${ext}`,
          source: 'output',
          sourceUrl: output.sourceUrl ?? null,
          jobId: job.id,
          probe: output.probe,
        }),
      );
    }
    const settled = await settleJob(handle, deps.notifier, { jobId: job.id, transition: 'succeed', leaseOwner: job.leaseOwner, outputs: stored, now: clock.now() });
    if (!settled) throw new Aborted();
    stored = [];
    log.info({ outputAssetIds: settled.output_asset_ids }, 'job succeeded');
  } catch (thrown) {
    const outcome = outcomeOf(thrown, run, engine);
    if (outcome.kind === 'failed' && outcome.error === null) log.error({ err: toError(thrown) }, 'job failed with an unexpected error');
    const nextEngine = deps.engines.nextAfter(job.capability, job.engine)?.name ?? null;
    const error = outcome.kind === 'failed' && outcome.error ? { code: outcome.error.code, message: outcome.error.message } : null;
    await carryOut(deps, job, decideAfterRun(job, outcome, { now: clock.now(), maxAttempts: deps.queue.maxAttempts, nextEngine }), log, error);
  } finally {
    // Outputs of a run that lost its job (cancelled, expired, taken over) never appear.
    await Promise.all(stored.map((row) => deps.store.delete(row.storage_key).catch(() => {})));
    await fsp.rm(workDir, { recursive: true, force: true }).catch(() => {});
  }
}

/** How the run ended, in the terms of `decideAfterRun`. */
function outcomeOf(thrown: unknown, run: { signal: AbortSignal; submitted: boolean }, engine: Engine | undefined): RunOutcome {
  if (run.signal.aborted || thrown instanceof Aborted) {
    return { kind: 'aborted', reason: (run.signal.reason as AbortReason | undefined) ?? 'lost', submitted: run.submitted };
  }
  // The one way an engine's words reach the job row: a provider's message may hold anything
  // (NUL, which PostgreSQL refuses, lone surrogates, megabytes), and a write that fails would
  // leave the job running until its lease lapsed, then submit it again.
  const error =
    thrown instanceof EngineError ? { code: thrown.code, message: storableText(thrown.message), retryable: thrown.retryable, expired: thrown.options.expired === true } : null;
  return { kind: 'failed', error, remote: engine !== undefined && isRemoteEngine(engine), submitted: run.submitted };
}

/** `error`: what the run failed with, for the attempt's history (a retry or a move records it too). */
async function carryOut(deps: RunJobDeps, job: ClaimedJob, decision: Decision, log: Logger, error: JobError | null): Promise<void> {
  const { handle, clock } = deps;
  const held = { handle, notifier: deps.notifier, jobId: job.id, workerId: job.leaseOwner, now: clock.now() };
  if ('countsAgainstCircuit' in decision && decision.countsAgainstCircuit) await recordEngineFailure(handle, job.engine, held.now);
  switch (decision.kind) {
    case 'hand-back':
      await handBackJob(held);
      log.info('job handed back on shutdown');
      return;
    case 'let-go':
      log.info({ reason: "job is no longer this worker's" }, 'job run aborted');
      if (decision.cancelAtProvider) await cancelAtProvider(deps, job.id, log);
      return;
    case 'reroute':
      if (await rerouteJob({ ...held, engine: decision.engine, error })) {
        deps.notifier.jobQueued();
        log.warn({ to: decision.engine }, 'job moved to the next engine');
      }
      return;
    case 'retry':
      await retryJobLater({ ...held, delayMs: decision.delayMs, error });
      log.warn({ delayMs: decision.delayMs }, 'job will retry');
      return;
    case 'settle':
      await settleJob(handle, deps.notifier, { jobId: job.id, transition: decision.transition, leaseOwner: job.leaseOwner, error: decision.error, now: held.now });
      log.info({ code: decision.error.code }, `job ${decision.transition === 'expire' ? 'expired' : 'failed'}: ${decision.error.message}`);
  }
}

async function produce(deps: RunJobDeps, job: ClaimedJob, engine: Engine, run: { signal: AbortSignal; workDir: string; log: Logger; submitted: boolean }): Promise<EngineOutput[]> {
  const { handle, clock } = deps;
  const maxInputPixels = deps.maxInputPixels ?? DEFAULT_MAX_INPUT_PIXELS;
  const held = { handle, notifier: deps.notifier, jobId: job.id, workerId: job.leaseOwner };
  let lastProgressAt = 0;
  let lastProgress = job.progress;
  const onProgress = (percent: number) => {
    const value = Math.max(0, Math.min(99, Math.floor(percent)));
    const now = clock.now();
    if (value <= lastProgress || now - lastProgressAt < PROGRESS_WRITE_MS) return;
    lastProgress = value;
    lastProgressAt = now;
    reportProgress({ ...held, progress: value, now }).catch((error) => run.log.warn({ err: error }, 'progress write failed'));
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
    const inputs = await materialize();
    return engine.run(
      { jobId: job.id, capability: job.capability, prompt: job.prompt, params: job.params, inputs },
      { signal: run.signal, onProgress, workDir: run.workDir, maxInputPixels },
    );
  }
  return runRemoteJob(job, engine, {
    signal: run.signal,
    workDir: run.workDir,
    log: run.log,
    clock,
    onProgress,
    materialize,
    publicUrlFor: (input) => {
      // Own assets get a keyless signed link; URL inputs are already public.
      if (input.sourceUrl) return input.sourceUrl;
      return `${deps.publicBaseUrl()}${deps.signer.signedDownloadPath(input.assetId!, deps.signedUrlTtlSeconds, clock.now())}`;
    },
    saveState: async (state) => {
      const ok = await saveEngineState({ ...held, state, now: clock.now() });
      if (ok && state?.phase === 'submitted') run.submitted = true;
      return ok;
    },
    noteRateLimit: (until) => noteProviderWait({ ...held, until, now: clock.now() }),
    allowPrivateUrls: deps.allowPrivateUrls,
    deadline: timeoutAt(job, deps.queue.jobTimeoutMs),
    maxOutputBytes: Math.max(4 * deps.maxInputBytes, 256 * 1024 * 1024),
    maxInputPixels,
    backoffScale: deps.backoffScale,
  });
}

/**
 * A cancelled job that had a task at a provider: ask the provider to stop it too (Seedance can
 * while queued). Read from the row, so a cancel made by another process is covered. Best effort:
 * the job is cancelled either way.
 */
async function cancelAtProvider(deps: RunJobDeps, jobId: string, log: Logger): Promise<void> {
  const row = await deps.handle.db.selectFrom('jobs').select(['status', 'engine_state']).where('id', '=', jobId).executeTakeFirst();
  if (row?.status !== 'cancelled') return;
  const state = parseEngineState(row.engine_state);
  if (state?.phase !== 'submitted') return;
  const engine = deps.engines.get(state.handle.engine);
  if (!engine || !isRemoteEngine(engine)) return;
  try {
    log.info({ taskId: state.handle.taskId, outcome: await engine.cancel(state.handle) }, 'remote task cancelled');
  } catch (error) {
    log.warn({ err: toError(error), taskId: state.handle.taskId }, 'provider cancel failed');
  }
}
