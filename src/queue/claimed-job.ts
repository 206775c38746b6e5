import type { JobsTable } from '../db/index.ts';
import type { EngineHandle } from '../engines/engine.ts';
import type { Capability, JobParams } from '../contract/index.ts';

/** What a remote run keeps in `jobs.engine_state`, so another worker can take over. */
export type RemoteState = { phase: 'submitting'; engine: string; at: number } | { phase: 'submitted'; handle: EngineHandle };

/**
 * A job as a worker holds it after claiming: the row's JSON columns parsed and typed, once,
 * here. Times are epoch milliseconds.
 */
export interface ClaimedJob {
  id: string;
  clientId: string;
  capability: Capability;
  prompt: string | null;
  params: JobParams;
  inputAssetIds: string[];
  engine: string;
  /** The client chose the engine: the job never moves to another. */
  enginePinned: boolean;
  engineState: RemoteState | null;
  /** Runs so far, this one included. */
  attempts: number;
  progress: number;
  createdAt: number;
  /** When the job first started (a retry or takeover keeps it). */
  startedAt: number;
  /** The worker holding the lease. */
  leaseOwner: string;
}

export function toClaimedJob(row: JobsTable): ClaimedJob {
  return {
    id: row.id,
    clientId: row.client_id,
    capability: row.capability as Capability,
    prompt: row.prompt,
    params: JSON.parse(row.params) as JobParams,
    inputAssetIds: JSON.parse(row.input_asset_ids) as string[],
    engine: row.engine,
    enginePinned: row.engine_pinned === 1,
    engineState: parseEngineState(row.engine_state),
    attempts: Number(row.attempts),
    progress: Number(row.progress ?? 0),
    createdAt: Math.floor(Number(row.created_at_us) / 1000),
    startedAt: Number(row.started_at),
    leaseOwner: row.lease_owner ?? '',
  };
}

export function parseEngineState(text: string | null): RemoteState | null {
  return text === null ? null : (JSON.parse(text) as RemoteState);
}

/** True once a task exists at a provider: the job may then neither move to another engine nor be submitted again. */
export function isSubmitted(job: Pick<ClaimedJob, 'engineState'>): boolean {
  return job.engineState?.phase === 'submitted';
}
