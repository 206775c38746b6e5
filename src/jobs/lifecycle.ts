/** Job states and the rules between them. Pure: no I/O. */
import { ERR } from '../lib/error-codes.ts';

export const JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'expired', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

const TERMINAL_STATUSES = ['succeeded', 'failed', 'expired', 'cancelled'] as const;
export type TerminalStatus = (typeof TERMINAL_STATUSES)[number];

export function isTerminal(status: string): status is TerminalStatus {
  return (TERMINAL_STATUSES as readonly string[]).includes(status);
}

/** The webhook event announcing a terminal status. */
export function eventFor(status: TerminalStatus): `generation.${TerminalStatus}` {
  return `generation.${status}`;
}

/** The `error.code` values the platform itself sets (engines add their own), from the catalogue (lib/error-codes.ts). */
export const JOB_ERRORS = {
  workerLost: ERR.worker_lost,
  queueTtl: ERR.queue_ttl_exceeded,
  timeout: ERR.job_timeout,
  inputFetch: ERR.input_fetch_failed,
  inputTooLarge: ERR.input_too_large,
  inputInvalid: ERR.invalid_input,
  internal: ERR.internal_error,
} as const;
