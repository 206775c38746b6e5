import type { DbHandle } from '../db/index.ts';
import type { JobErrorCode } from '../lib/error-codes.ts';
import type { Notifier } from '../lib/notifier.ts';
import type { RemoteState } from './claimed-job.ts';
import { transition } from './transitions.ts';

/**
 * What a worker does with a job it holds, short of finishing it. Each is a leased transition
 * (transitions.ts): false or a missing id means the job is no longer this worker's.
 */
interface Held {
  handle: DbHandle;
  notifier: Notifier | null;
  jobId: string;
  workerId: string;
  now: number;
}

const target = (h: Held) => ({ jobId: h.jobId, leaseOwner: h.workerId });

/**
 * Extends the leases this worker holds and returns the ids it no longer holds (cancelled,
 * expired, or taken over after a stall) so their runs can be aborted.
 */
export async function renewLeases(handle: DbHandle, input: { workerId: string; jobIds: string[]; now: number; leaseMs: number }): Promise<string[]> {
  if (input.jobIds.length === 0) return [];
  const kept = await transition(handle, null, 'renew', { jobId: input.jobIds, leaseOwner: input.workerId }, { leaseMs: input.leaseMs, now: input.now });
  const keptIds = new Set(kept.map((r) => r.id));
  return input.jobIds.filter((id) => !keptIds.has(id));
}

/** Read-only variant of `renewLeases`, cheap enough to run every few hundred milliseconds. */
export async function findLostJobs(handle: DbHandle, workerId: string, jobIds: string[]): Promise<string[]> {
  if (jobIds.length === 0) return [];
  const held = await handle.db.selectFrom('jobs').select('id').where('id', 'in', jobIds).where('lease_owner', '=', workerId).where('status', '=', 'running').execute();
  const heldIds = new Set(held.map((r) => r.id));
  return jobIds.filter((id) => !heldIds.has(id));
}

export async function reportProgress(h: Held & { progress: number }): Promise<void> {
  await transition(h.handle, h.notifier, 'progress', target(h), { progress: h.progress, now: h.now });
}

/** Saves engine resume state (a remote task handle) while the lease is held. */
export async function saveEngineState(h: Held & { state: RemoteState | null }): Promise<boolean> {
  return (await transition(h.handle, h.notifier, 'saveEngineState', target(h), { state: h.state, now: h.now })).length === 1;
}

/** The run waits for a provider's rate limit until `until`; null when the wait is over. */
export async function noteProviderWait(h: Held & { until: number | null }): Promise<void> {
  await transition(h.handle, h.notifier, 'waitAtProvider', target(h), { until: h.until, now: h.now });
}

/** Hands a job back at once, on graceful shutdown: the attempt does not count. */
export async function handBackJob(h: Held): Promise<void> {
  await transition(h.handle, h.notifier, 'handBack', target(h), { now: h.now });
}

/** Hands a job back to be tried again in `delayMs` (after a transient engine error): the attempt counts. */
export async function retryJobLater(h: Held & { delayMs: number; error: { code: JobErrorCode; message: string } | null }): Promise<void> {
  await transition(h.handle, h.notifier, 'retryLater', target(h), { delayMs: h.delayMs, error: h.error, now: h.now });
}

/** Moves a job that has not started remote work to another engine, ready to be claimed at once; the attempt does not count. */
export async function rerouteJob(h: Held & { engine: string; error: { code: JobErrorCode; message: string } | null }): Promise<boolean> {
  return (await transition(h.handle, h.notifier, 'reroute', target(h), { engine: h.engine, error: h.error, now: h.now })).length === 1;
}
