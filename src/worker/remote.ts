import fsp from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { downloadToFile, FetchError } from '../net/index.ts';
import { EngineError, type EngineHandle, type EngineInput, type EngineOutput, type PollResult, type RemoteEngine, type RemoteInput } from '../engines/engine.ts';
import { UPSCALE_LONG_SIDE } from '../contract/index.ts';
import { Aborted } from '../lib/abort.ts';
import { ERR } from '../lib/error-codes.ts';
import type { Clock } from '../lib/clock.ts';
import { storableText } from '../lib/storable-text.ts';
import { OUTPUT_FETCH, outputFetchWaitMs, POLL_FAILURE_LIMIT, PROVIDER_TRANSIENT, rateLimitWaitMs, transientWaitMs } from '../lib/retry-ladders.ts';
import { PixelLimitExceeded, probeFile } from '../media/probe.ts';
import { DecodeLimitExceeded, resizeImageTo } from '../media/resize.ts';
import type { ClaimedJob, RemoteState } from '../queue/index.ts';

export interface RemoteRunContext {
  signal: AbortSignal;
  clock: Clock;
  workDir: string;
  log: Logger;
  onProgress(percent: number): void;
  /** Stores engine state while the lease is held; false when the job is no longer ours. */
  saveState(state: RemoteState | null): Promise<boolean>;
  /** Records that the run waits for the provider's rate limit until `until` (null: no longer), so the job says why it waits. */
  noteRateLimit(until: number | null): Promise<void>;
  /** The job's inputs on disk (fetched through the URL guard), in order. */
  materialize(): Promise<EngineInput[]>;
  /** Keyless, signed, short-lived URL of an input for the provider to fetch. */
  publicUrlFor(input: EngineInput, index: number): string;
  allowPrivateUrls: boolean;
  maxOutputBytes: number;
  /** ZHINIAN_MAX_INPUT_PIXELS: a result image declaring more pixels fails the job before it is decoded. */
  maxInputPixels: number;
  /** When the job times out (epoch ms): a rate limit that would outlast it fails the job instead. */
  deadline: number;
  /** Wait time of the rate-limit and retry ladders (tests shorten it). */
  backoffScale?: number;
  /** Jitter of the retry ladders (lib/retry-ladders.ts); Math.random unless a test fixes it. */
  random?: () => number;
}

/**
 * Runs a job on a remote engine: submit once (the handle is stored before the first poll, so
 * a worker that inherits the job resumes polling and never submits again), poll on the
 * engine's cadence, then re-host every result into local files — provider URLs expire, so a
 * job never finishes on a third-party link. Returns files like a local engine does.
 */
export async function runRemoteJob(job: ClaimedJob, engine: RemoteEngine, ctx: RemoteRunContext): Promise<EngineOutput[]> {
  const saved = job.engineState;
  let handle: EngineHandle;
  if (saved?.phase === 'submitted' && saved.handle.engine === engine.name) {
    handle = saved.handle;
    ctx.log.info({ taskId: handle.taskId }, 'resuming remote task');
  } else {
    if (saved?.phase === 'submitting' && saved.engine === engine.name) {
      // A worker died between sending the submit and storing its answer: the provider may have
      // a task we cannot find. Submitting again could bill twice, so stop here.
      throw new EngineError(ERR.provider_task_lost, 'The worker stopped while submitting to the provider; the remote task cannot be resumed.');
    }
    handle = await submit(job, engine, ctx);
  }
  return pollUntilDone(job, engine, handle, ctx);
}

async function submit(job: ClaimedJob, engine: RemoteEngine, ctx: RemoteRunContext): Promise<EngineHandle> {
  const inputs = await ctx.materialize();
  const remoteInputs: RemoteInput[] = [];
  for (const [i, input] of inputs.entries()) {
    const probe = await probeFile(input.path);
    remoteInputs.push({ ...input, publicUrl: ctx.publicUrlFor(input, i), width: probe.width, height: probe.height });
  }
  const request = { jobId: job.id, capability: job.capability, prompt: job.prompt, params: job.params, inputs: remoteInputs };
  if (!(await ctx.saveState({ phase: 'submitting', engine: engine.name, at: ctx.clock.now() }))) throw new Aborted();
  let handle: EngineHandle;
  try {
    // A submission in flight is never cut off by a cancel (or a shutdown, or a lost lease): the
    // provider may already have made the task, and an answer we stop reading would leave it
    // there unknown. It ends on its own (ZHINIAN_PROVIDER_HTTP_TIMEOUT_MS bounds each call); the
    // signal still ends the waits between tries, when nothing is in flight.
    const notCutOff = new AbortController().signal;
    handle = await withRetries(ctx, 'submit', () => engine.submit(request, { signal: notCutOff, idempotencyKey: `${job.id}:1` }));
    checkTaskId(engine.name, handle.taskId);
  } catch (error) {
    // The provider answered (or never got it), or we stopped between tries: no task exists, so
    // a later attempt may submit (a no-op when the job is no longer ours).
    await ctx.saveState(null);
    throw error;
  }
  if (!(await ctx.saveState({ phase: 'submitted', handle }))) {
    // The job was cancelled (or taken from us) while the submission was in flight: the task
    // is ours alone to stop, and this is the only place that knows it.
    const outcome = await engine.cancel(handle).catch((error: unknown) => `failed: ${(error as Error).message}`);
    ctx.log.info({ taskId: handle.taskId, outcome }, 'remote task submitted after the job ended; cancelled at the provider');
    throw new Aborted();
  }
  ctx.log.info({ taskId: handle.taskId }, 'remote task submitted');
  return handle;
}

/** Longest task id or result URL we keep (real ones are tens of characters). */
const MAX_TASK_TEXT = 2_048;

/**
 * A task id goes into every poll's URL and into the job row: one that is not a short, clean
 * string is not a task we could follow (like an answer without an id, it is not retried).
 */
function checkTaskId(engine: string, taskId: unknown): void {
  if (typeof taskId === 'string' && taskId.length > 0 && taskId.length <= MAX_TASK_TEXT && storableText(taskId, MAX_TASK_TEXT) === taskId && taskId.trim() === taskId) return;
  throw new EngineError(ERR.provider_error, `${engine} create: the answer's task id is not usable (${storableText(taskId, 80)})`);
}

async function pollUntilDone(job: ClaimedJob, engine: RemoteEngine, handle: EngineHandle, ctx: RemoteRunContext): Promise<EngineOutput[]> {
  let failures = 0;
  let refetchedForFreshUrls = false;
  for (let count = 1; ; count++) {
    await sleep(engine.pollDelayMs(count), undefined, { signal: ctx.signal }).catch(() => {
      throw new Aborted();
    });
    let result: PollResult;
    try {
      result = await engine.poll(handle, { signal: ctx.signal });
      failures = 0;
    } catch (error) {
      if (!(error instanceof EngineError) || !(error.retryable || error.options.rateLimited)) throw error;
      failures++;
      if (error.retryable && failures >= POLL_FAILURE_LIMIT) throw error;
      // A rate limit waits its Retry-After, else one more poll interval, and the job says so meanwhile.
      if (error.options.rateLimited) await rateLimitPause(ctx, error.options.retryAfterMs ?? engine.pollDelayMs(count));
      else if (error.options.retryAfterMs) await pause(ctx, error.options.retryAfterMs);
      continue;
    }
    if (result.progress !== null) ctx.onProgress(result.progress);
    switch (result.status) {
      case 'queued':
      case 'running':
        continue;
      case 'succeeded':
        try {
          return await rehostOutputs(job, result, ctx);
        } catch (error) {
          // Result links that already died (403/404/410): a fresh poll may hand out new ones, once.
          if (error instanceof OutputGone && !refetchedForFreshUrls) {
            refetchedForFreshUrls = true;
            continue;
          }
          if (error instanceof OutputGone) throw new EngineError(ERR.output_unavailable, error.message);
          throw error;
        }
      case 'expired':
        throw new EngineError(result.error?.code ?? ERR.provider_timeout, result.error?.message ?? `${engine.name} let the task expire.`, { expired: true });
      case 'cancelled':
        throw new EngineError(result.error?.code ?? ERR.provider_error, result.error?.message ?? `${engine.name} cancelled the task on its side.`);
      case 'failed':
        throw new EngineError(result.error?.code ?? ERR.provider_error, result.error?.message ?? `${engine.name} reported the task failed.`, {
          providerCode: result.error?.providerCode,
        });
    }
  }
}

class OutputGone extends Error {}

async function rehostOutputs(job: ClaimedJob, result: PollResult, ctx: RemoteRunContext): Promise<EngineOutput[]> {
  const outputs: EngineOutput[] = [];
  if (!result.outputs?.length) throw new EngineError(ERR.provider_error, 'The provider reported success without any result.');
  for (const [i, output] of result.outputs.entries()) {
    const file = path.join(ctx.workDir, `output-${i}`);
    let sourceUrl: string | undefined;
    if (output.data) {
      await fsp.writeFile(file, output.data);
    } else if (output.url) {
      // Kept on the asset row: the provider's text, so made storable (it is only a record).
      sourceUrl = storableText(output.url.split('?')[0], MAX_TASK_TEXT);
      await fetchOutput(output.url, file, ctx);
    } else {
      throw new EngineError(ERR.provider_error, 'The provider returned a result with neither a URL nor data.');
    }
    let probe: Awaited<ReturnType<typeof probeFile>>;
    try {
      probe = await probeFile(file, { maxInputPixels: ctx.maxInputPixels, signal: ctx.signal });
    } catch (error) {
      // Another poll would hand out the same result: not retryable.
      if (error instanceof PixelLimitExceeded) throw new EngineError(ERR.output_too_large, `The provider's result ${i + 1}: ${error.detail}`);
      throw error;
    }
    if (probe.kind !== output.kind && !(output.kind === 'image' && probe.kind === 'image')) {
      throw new EngineError(ERR.provider_error, `The provider's result ${i + 1} is ${probe.mimeType}, not an ${output.kind}.`);
    }
    const finalFile = await fitToRequest(job, file, probe.kind, probe.width, probe.height, ctx.maxInputPixels);
    const finalProbe = finalFile === file ? probe : await probeFile(finalFile);
    outputs.push({ path: finalFile, kind: output.kind, mimeType: finalProbe.mimeType, sourceUrl, probe: finalProbe });
  }
  return outputs;
}

async function fetchOutput(url: string, file: string, ctx: RemoteRunContext): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await downloadToFile(url, file, { allowPrivate: ctx.allowPrivateUrls, maxBytes: ctx.maxOutputBytes, signal: ctx.signal, timeoutMs: 300_000 });
      return;
    } catch (error) {
      if (ctx.signal.aborted) throw new Aborted();
      if (!(error instanceof FetchError)) throw error;
      if (error.code === ERR.http_status && [403, 404, 410].includes(error.status ?? 0)) throw new OutputGone(`The result link answered HTTP ${error.status}.`);
      if (error.code === ERR.too_large) throw new EngineError(ERR.output_unavailable, `A result is larger than ${ctx.maxOutputBytes} bytes.`);
      const transient = error.code === ERR.fetch_failed || error.code === ERR.timeout || (error.status ?? 0) >= 500;
      if (!transient || attempt >= OUTPUT_FETCH.tries) throw new EngineError(ERR.output_unavailable, `Could not download a result: ${error.message}`);
      await pause(ctx, outputFetchWaitMs(attempt));
    }
  }
}

/** Providers return their own sizes: make images exactly what the job asked for. */
async function fitToRequest(job: ClaimedJob, file: string, kind: string, width: number | null, height: number | null, maxInputPixels: number): Promise<string> {
  if (kind !== 'image' || !width || !height) return file;
  const { params } = job;
  let target: { width: number; height: number } | null = null;
  if (job.capability === 'image.generate' && params.width && params.height) target = { width: params.width, height: params.height };
  if (job.capability === 'image.upscale') {
    const long = UPSCALE_LONG_SIDE[params.resolution ?? '4k'];
    target = width >= height ? { width: long, height: Math.round((height * long) / width) } : { width: Math.round((width * long) / height), height: long };
  }
  if (!target || (target.width === width && target.height === height)) return file;
  // The header was checked against the limit; the decode is held to it too.
  try {
    return await resizeImageTo(file, target, maxInputPixels);
  } catch (error) {
    if (error instanceof DecodeLimitExceeded) throw new EngineError(ERR.output_too_large, `A result image: ${error.message}`);
    throw error;
  }
}

/**
 * Calls `fn`, riding out trouble the provider says will pass: rate limits wait their
 * Retry-After (else PROVIDER_RATE_LIMIT) until the job's deadline aborts the run; transient
 * errors climb PROVIDER_TRANSIENT (lib/retry-ladders.ts).
 */
async function withRetries<T>(ctx: RemoteRunContext, what: string, fn: () => Promise<T>): Promise<T> {
  let transient = 0;
  let limited = 0;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (!(error instanceof EngineError)) throw error;
      if (error.options.rateLimited) {
        limited++;
        const wait = error.options.retryAfterMs ?? rateLimitWaitMs(limited, ctx.random);
        if (ctx.clock.now() + wait * (ctx.backoffScale ?? 1) >= ctx.deadline) {
          throw new EngineError(error.code, `Still rate-limited when the job's time ran out: ${error.message}`);
        }
        ctx.log.warn({ code: error.code, waitMs: Math.round(wait) }, `${what} rate-limited`);
        await rateLimitPause(ctx, wait);
        continue;
      }
      // A submit that timed out may have created a task: without an idempotency key, try it once more only.
      const tries = what === 'submit' && error.code === ERR.provider_timeout ? PROVIDER_TRANSIENT.timedOutSubmitTries : PROVIDER_TRANSIENT.tries;
      if (error.retryable && ++transient < tries) {
        await pause(ctx, transientWaitMs(transient, ctx.random));
        continue;
      }
      throw error;
    }
  }
}

/** A pause the job shows as `provider_rate_limited` while it lasts. */
async function rateLimitPause(ctx: RemoteRunContext, ms: number): Promise<void> {
  await ctx.noteRateLimit(ctx.clock.now() + Math.round(ms * (ctx.backoffScale ?? 1)));
  await pause(ctx, ms);
  await ctx.noteRateLimit(null);
}

async function pause(ctx: RemoteRunContext, ms: number): Promise<void> {
  await sleep(ms * (ctx.backoffScale ?? 1), undefined, { signal: ctx.signal }).catch(() => {
    throw new Aborted();
  });
}
