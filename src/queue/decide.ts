/**
 * What happens to a claimed job around a run, decided in one place, by pure functions of the
 * job, what happened and the time: no I/O, no clock of their own. The worker carries the
 * decision out (worker/run-job.ts); decide.test.ts covers every branch without a database.
 */
import { ERR, type JobErrorCode } from '../lib/error-codes.ts';
import { jobRetryDelayMs } from '../lib/retry-ladders.ts';
import type { ClaimedJob } from './claimed-job.ts';
import { DEADLINE_ERRORS, type QueueOptions } from './deadlines.ts';

/** Provider trouble that says nothing about the request itself: another engine may well succeed, and the circuit counts it. */
const PROVIDER_DOWN_CODES: ReadonlySet<JobErrorCode> = new Set([ERR.provider_error, ERR.provider_timeout, ERR.provider_auth, ERR.quota_exceeded]);

export interface JobError {
  code: JobErrorCode;
  message: string;
}

/** How a run ended, short of success. */
export type RunOutcome =
  /** The run's signal fired: the worker shuts down, the client cancelled, or the job is no longer this worker's. */
  (
    | { kind: 'aborted'; reason: 'shutdown' | 'cancelled' | 'lost' }
    /** The engine threw `error` (null: something unexpected threw, which is never retried). */
    | { kind: 'failed'; error: { code: JobErrorCode; message: string; retryable: boolean; expired: boolean } | null; remote: boolean }
  ) & {
    /** A task exists at a provider (stored before the first poll): the job may not move, and a cancel should reach it. */
    submitted: boolean;
  };

export type Decision =
  /** Give the job back at once, the attempt not counted (shutdown). */
  | { kind: 'hand-back' }
  /**
   * The job is not ours any more (cancelled, expired, taken over): write nothing. With a task at
   * a provider, see whether the job was cancelled (perhaps by another process, which this one
   * only notices as a lost lease), and if so stop the task there too.
   */
  | { kind: 'let-go'; cancelAtProvider: boolean }
  /** Move the job, not yet started at any provider, to the next engine. */
  | { kind: 'reroute'; engine: string; countsAgainstCircuit: true }
  /** Try again after `delayMs`; the attempt counts. */
  | { kind: 'retry'; delayMs: number; countsAgainstCircuit: boolean }
  /** End the job. */
  | { kind: 'settle'; transition: 'fail' | 'expire'; error: JobError; countsAgainstCircuit: boolean };

export interface DecideContext {
  now: number;
  maxAttempts: number;
  /** The engine after this one in the capability's preference list, if any (the job may move there unless pinned). */
  nextEngine: string | null;
}

const UNEXPECTED: JobError = { code: ERR.internal_error, message: 'The worker failed while running this job.' };

export function decideAfterRun(job: ClaimedJob, outcome: RunOutcome, ctx: DecideContext): Decision {
  if (outcome.kind === 'aborted') {
    if (outcome.reason === 'shutdown') return { kind: 'hand-back' };
    return { kind: 'let-go', cancelAtProvider: outcome.submitted };
  }
  const { error } = outcome;
  if (error === null) return { kind: 'settle', transition: 'fail', error: UNEXPECTED, countsAgainstCircuit: false };
  const providerDown = outcome.remote && PROVIDER_DOWN_CODES.has(error.code);
  // Nothing was started at the provider yet, so the job may move on without double work.
  if (providerDown && !job.enginePinned && !outcome.submitted && ctx.nextEngine !== null) {
    return { kind: 'reroute', engine: ctx.nextEngine, countsAgainstCircuit: true };
  }
  if (error.retryable && job.attempts < ctx.maxAttempts) {
    // JOB_RETRY_DELAYS_MS by attempt number, the last repeating.
    const delayMs = jobRetryDelayMs(job.attempts);
    return { kind: 'retry', delayMs, countsAgainstCircuit: providerDown };
  }
  return {
    kind: 'settle',
    transition: error.expired ? 'expire' : 'fail',
    error: { code: error.code, message: error.message },
    countsAgainstCircuit: providerDown,
  };
}

/**
 * Whether a job just claimed may run: not when it has been claimed too often (its workers keep
 * dying), or a deadline passed while it waited. Returns the settlement that ends it, or null.
 */
export function checkClaimed(
  job: ClaimedJob,
  opts: Pick<QueueOptions, 'maxAttempts' | 'queueTtlMs' | 'jobTimeoutMs'> & { now: number },
): { transition: 'fail' | 'expire'; error: JobError } | null {
  if (job.attempts > opts.maxAttempts) {
    return { transition: 'fail', error: { code: ERR.worker_lost, message: `The job's worker stopped ${opts.maxAttempts} times before finishing it.` } };
  }
  // The queue TTL concerns the wait before a job first starts (the claim just set startedAt),
  // not a job handed back on shutdown after it started in time.
  if (job.startedAt === opts.now && opts.now - job.createdAt > opts.queueTtlMs) return { transition: 'expire', error: DEADLINE_ERRORS.queueTtl };
  if (opts.now - job.startedAt > opts.jobTimeoutMs) return { transition: 'expire', error: DEADLINE_ERRORS.timeout };
  return null;
}

/** When a running job times out. */
export function timeoutAt(job: ClaimedJob, jobTimeoutMs: number): number {
  return job.startedAt + jobTimeoutMs;
}
