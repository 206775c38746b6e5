import type { Tx } from '../db/index.ts';
import type { JobStatus, TerminalStatus } from '../contract/index.ts';

/**
 * Every change a job row can go through, with the states it may start from, declared once.
 * `leased`: only the worker holding the job's lease may make it (its id is in the where
 * clause), so a worker that lost its job (cancelled, expired, taken over) changes nothing.
 * Each statement in this module starts from `jobUpdate(tx, transition, …)`, which applies
 * exactly these conditions; the row count tells whether the transition happened.
 */
export const TRANSITIONS = {
  /** A worker takes a job: a queued one, or a running one whose lease lapsed or was handed back. */
  claim: { from: ['queued', 'running'], leased: false },
  /** The worker extends its lease, saves progress or engine state. */
  renew: { from: ['running'], leased: true },
  progress: { from: ['running'], leased: true },
  saveEngineState: { from: ['running'], leased: true },
  /** The worker gives the job back at once (shutdown: the attempt does not count). */
  handBack: { from: ['running'], leased: true },
  /** The worker gives the job back to be tried again after a delay (the attempt counts). */
  retryLater: { from: ['running'], leased: true },
  /** The worker moves the job (not yet started at any provider) to the next engine. */
  reroute: { from: ['running'], leased: true },
  /** A job waiting for an engine whose circuit is open moves to the next engine (nobody holds it). */
  rerouteWaiting: { from: ['queued', 'running'], leased: false },
  /** The worker's verdict on its own run. */
  succeed: { from: ['running'], leased: true, to: 'succeeded' },
  fail: { from: ['running'], leased: true, to: 'failed' },
  expire: { from: ['running'], leased: true, to: 'expired' },
  /** Deadlines noticed by the sweep, whoever holds the job (its worker aborts at its next lease check). */
  expireQueued: { from: ['queued'], leased: false, to: 'expired' },
  expireRunning: { from: ['running'], leased: false, to: 'expired' },
  /** The client cancels. */
  cancel: { from: ['queued', 'running'], leased: false, to: 'cancelled' },
} as const satisfies Record<string, { from: readonly JobStatus[]; leased: boolean; to?: TerminalStatus }>;

export type Transition = keyof typeof TRANSITIONS;
/** The transitions that end a job. */
export type Settlement = { [T in Transition]: (typeof TRANSITIONS)[T] extends { to: TerminalStatus } ? T : never }[Transition];

export interface JobTarget {
  jobId: string | readonly string[];
  /** The worker making a leased transition. */
  leaseOwner?: string;
  /** Only this client's job (the client's own cancel). */
  clientId?: string;
}

/** An UPDATE of `jobs` restricted to the rows on which `transition` may happen. */
export function jobUpdate(db: Tx, transition: Transition, target: JobTarget) {
  const rule = TRANSITIONS[transition];
  let query = db.updateTable('jobs').where('status', 'in', rule.from);
  query = typeof target.jobId === 'string' ? query.where('id', '=', target.jobId) : query.where('id', 'in', target.jobId);
  if (rule.leased) {
    if (target.leaseOwner === undefined) throw new Error(`transition ${transition} needs the lease owner`);
    query = query.where('lease_owner', '=', target.leaseOwner);
  }
  if (target.clientId !== undefined) query = query.where('client_id', '=', target.clientId);
  return query;
}
