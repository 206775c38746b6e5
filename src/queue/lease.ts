import type { DbHandle } from '../db/index.ts';
import type { RemoteState } from './claimed-job.ts';
import { jobUpdate } from './transitions.ts';

/**
 * What a worker does with a job it holds, short of finishing it. Each is conditional on the
 * lease (see transitions.ts): false or a missing id means the job is no longer this worker's.
 */
interface Held {
  jobId: string;
  workerId: string;
  now: number;
}

/**
 * Extends the leases this worker holds and returns the ids it no longer holds (cancelled,
 * expired, or taken over after a stall) so their runs can be aborted.
 */
export async function renewLeases(handle: DbHandle, input: { workerId: string; jobIds: string[]; now: number; leaseMs: number }): Promise<string[]> {
  if (input.jobIds.length === 0) return [];
  const kept = await jobUpdate(handle.db, 'renew', { jobId: input.jobIds, leaseOwner: input.workerId })
    .set({ run_at: input.now + input.leaseMs })
    .returning('id')
    .execute();
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

export async function reportProgress(handle: DbHandle, input: Held & { progress: number }): Promise<void> {
  await jobUpdate(handle.db, 'progress', { jobId: input.jobId, leaseOwner: input.workerId }).set({ progress: input.progress, updated_at: input.now }).execute();
}

/** Saves engine resume state (a remote task handle) while the lease is held. */
export async function saveEngineState(handle: DbHandle, input: Omit<Held, 'now'> & { state: RemoteState | null }): Promise<boolean> {
  const res = await jobUpdate(handle.db, 'saveEngineState', { jobId: input.jobId, leaseOwner: input.workerId })
    .set({ engine_state: input.state === null ? null : JSON.stringify(input.state) })
    .executeTakeFirst();
  return Number(res.numUpdatedRows) === 1;
}

/** Hands a job back at once, on graceful shutdown: the attempt does not count. */
export async function handBackJob(handle: DbHandle, input: Held): Promise<void> {
  await jobUpdate(handle.db, 'handBack', { jobId: input.jobId, leaseOwner: input.workerId })
    .set((eb) => ({ lease_owner: null, run_at: input.now, attempts: eb('attempts', '-', 1), updated_at: input.now }))
    .execute();
}

/** Hands a job back to be tried again in `delayMs` (after a transient engine error): the attempt counts. */
export async function retryJobLater(handle: DbHandle, input: Held & { delayMs: number }): Promise<void> {
  await jobUpdate(handle.db, 'retryLater', { jobId: input.jobId, leaseOwner: input.workerId })
    .set({ lease_owner: null, run_at: input.now + input.delayMs, updated_at: input.now })
    .execute();
}

/** Moves a job that has not started remote work to another engine, ready to be claimed at once; the attempt does not count. */
export async function rerouteJob(handle: DbHandle, input: Held & { engine: string }): Promise<boolean> {
  const res = await jobUpdate(handle.db, 'reroute', { jobId: input.jobId, leaseOwner: input.workerId })
    .set((eb) => ({ engine: input.engine, engine_state: null, lease_owner: null, run_at: input.now, attempts: eb('attempts', '-', 1), updated_at: input.now }))
    .executeTakeFirst();
  return Number(res.numUpdatedRows) === 1;
}
