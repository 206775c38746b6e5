/**
 * What the remote adapters have in common, whatever the provider: their shared settings, reading
 * and classifying a failed answer, turning a classified fault into an EngineError, handles, lost
 * tasks, status tables, result lists and poll cadences. Each provider's own facts (codes, words,
 * numbers) stay in its *-mapping.ts; this module holds only the mechanism.
 */
import type { Clock } from '../../lib/clock.ts';
import { ERR, type JobErrorCode } from '../../lib/error-codes.ts';
import { EngineError, type EngineHandle, type PollResult, type TaskStatus } from '../engine.ts';
import type { ProviderResponse } from './http.ts';

/** Settings every remote adapter takes besides its credentials. */
export interface RemoteEngineConfig {
  httpTimeoutMs: number;
  /** A fixed poll interval, overriding the provider's cadence (tests). */
  pollIntervalMs?: number;
  maxConcurrency: number;
  /** Time for handles and the adapter's own age and expiry checks (tests move it); the system clock by default. */
  clock?: Clock;
}

// ---------------------------------------------------------------------------------------------
// Failed calls

/** How the worker treats a failed call (docs/providers.md §1.3). */
export type FaultKind = 'permanent' | 'retryable' | 'rate_limited';

export interface Fault {
  kind: FaultKind;
  /** Our job.error.code. */
  code: JobErrorCode;
  /** For a rate limit: how long to wait, when the provider or its mapping says. */
  retryAfterMs?: number;
}

/** The HTTP statuses that mean the same at every provider; undefined for the rest, which each mapping decides. */
export function classifyCommonStatus(status: number): Fault | undefined {
  if (status === 401 || status === 403) return { kind: 'permanent', code: ERR.provider_auth };
  if (status === 429) return { kind: 'rate_limited', code: ERR.rate_limited };
  if (status === 408 || status >= 500) return { kind: 'retryable', code: ERR.provider_error };
  return undefined;
}

/** The error a failed call throws: retryable and rate-limited faults say so (a rate limit with its wait, if known). */
export function faultError(fault: Fault, message: string, extra: { providerCode?: string | number; httpStatus: number }): EngineError {
  switch (fault.kind) {
    case 'retryable':
      return new EngineError(fault.code, message, { ...extra, retryable: true });
    case 'rate_limited':
      return new EngineError(fault.code, message, { ...extra, rateLimited: true, retryAfterMs: fault.retryAfterMs });
    case 'permanent':
      return new EngineError(fault.code, message, extra);
  }
}

export function isOk(res: ProviderResponse): boolean {
  return res.status >= 200 && res.status < 300;
}

/**
 * The `{ error: { code, message } }` envelope Ark and EvoLink answer with: the code (a string, or
 * at EvoLink sometimes a number) and a detail fit for a job error (the text's start without one).
 */
export function errorEnvelope(res: ProviderResponse): { providerCode: string | number | undefined; detail: string } {
  const err = res.json?.error;
  const providerCode = typeof err?.code === 'string' || typeof err?.code === 'number' ? err.code : undefined;
  const detail = withoutQueries(typeof err?.message === 'string' ? err.message : res.text.slice(0, 200));
  return { providerCode, detail };
}

/** `seedance create: HTTP 429 RateLimitExceeded: …`. */
export function failedCallMessage(engine: string, what: string, status: number, providerCode: string | number | undefined, detail: string): string {
  return `${engine} ${what}: HTTP ${status}${providerCode !== undefined ? ` ${providerCode}` : ''}: ${detail}`.trim();
}

/** A 2xx answer without the id of the task it created: the task may exist and bill, so not retryable. */
export function missingTaskId(engine: string, res: ProviderResponse): EngineError {
  return new EngineError(ERR.provider_error, `${engine} create: HTTP ${res.status} without a task id`, { httpStatus: res.status });
}

/** A 2xx task read that is not a task object: a glitch, so the poll is retried. */
export function missingTaskObject(engine: string, res: ProviderResponse): EngineError {
  return new EngineError(ERR.provider_error, `${engine} get: HTTP ${res.status} without a task object`, { retryable: true, httpStatus: res.status });
}

/** Provider messages may echo a signed input URL: keep its signature out of job errors and logs. */
export function withoutQueries(text: string): string {
  return text.replace(/(https?:\/\/[^\s?#"']+)\?[^\s"']*/g, '$1?…');
}

export function invalidInput(message: string): EngineError {
  return new EngineError(ERR.invalid_input, message);
}

// ---------------------------------------------------------------------------------------------
// Tasks

/** The handle of a task just created, stamped with the engine's clock. */
export function newHandle(engine: string, taskId: string, clock: Clock, meta: EngineHandle['meta']): EngineHandle {
  return { engine, taskId, submittedAt: new Date(clock.now()).toISOString(), meta };
}

/** The provider does not know the task (any more): the run ends, and resubmitting is the job's business. */
export function taskLost(message: string, detail: { providerCode?: string | number } = {}): PollResult {
  return { status: 'failed', progress: null, providerStatus: 'not_found', error: { code: ERR.provider_task_lost, message, ...detail } };
}

/** A provider status word through its mapping's table; unknown words are `running` (docs/providers.md §1.2). */
export function statusFromTable(table: Readonly<Record<string, TaskStatus>>, word: string): TaskStatus {
  return Object.hasOwn(table, word) ? table[word]! : 'running';
}

export function isNonEmptyString(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0;
}

/** The non-empty strings of a result list (URLs, base64); nothing when it is not a list. */
export function nonEmptyStrings(list: unknown): string[] {
  return Array.isArray(list) ? list.filter(isNonEmptyString) : [];
}

/**
 * A two-speed poll cadence: `firstMs` after each of the first `firstPolls` polls (a quick task is
 * seen quickly), `thenMs` after (a slow one costs few calls). The numbers are each mapping's.
 */
export function twoSpeedPollDelayMs(pollCount: number, cadence: { firstPolls: number; firstMs: number; thenMs: number }): number {
  return pollCount <= cadence.firstPolls ? cadence.firstMs : cadence.thenMs;
}
