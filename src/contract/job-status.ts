/** Job states and the webhook events that announce the terminal ones. */

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
