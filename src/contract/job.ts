import type { JobsTable } from '../db/index.ts';
import { iso } from '../lib/clock.ts';
import type { Capability, JobParams } from './capabilities.ts';
import type { JobStatus } from './job-status.ts';

/** A job as the API shows it. */
export interface Job {
  id: string;
  capability: Capability;
  status: JobStatus;
  prompt: string | null;
  params: JobParams;
  inputAssetIds: string[];
  outputAssetIds: string[];
  error: { code: string; message: string } | null;
  progress: number | null;
  engine: string;
  webhookUrl: string | null;
  metadata: Record<string, unknown> | null;
  createdAt: string;
  updatedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  /** Why a queued or running job is not simply being worked on (null: it is, or it ended). */
  statusDetail: StatusDetail | null;
}

/** The reasons a job waits (CONTRACT "Why a job waits, and its history"). */
export const STATUS_DETAIL_CODES = ['client_running_cap', 'engine_busy', 'engine_circuit_open', 'retry_backoff', 'provider_rate_limited', 'at_provider'] as const;
type StatusDetailCode = (typeof STATUS_DETAIL_CODES)[number];

export interface StatusDetail {
  code: StatusDetailCode;
  message: string;
  /** When it is tried again (ISO), when known. */
  retryAt: string | null;
}

/** How one attempt (a worker taking the job) ended; `running` while it goes on. */
export const ATTEMPT_OUTCOMES = ['running', 'succeeded', 'failed', 'expired', 'cancelled', 'retry', 'rerouted', 'handed_back', 'lease_lost'] as const;
export type AttemptOutcome = (typeof ATTEMPT_OUTCOMES)[number];

/** One attempt as the console shows it, oldest first. */
export interface JobAttempt {
  n: number;
  engine: string;
  startedAt: string;
  endedAt: string | null;
  outcome: AttemptOutcome;
  error: { code: string; message: string } | null;
  providerTaskId: string | null;
}

/** A job row as the API shows it; `statusDetail` comes from queue/status-detail.ts (it needs the queue's state). */
export function toJob(row: JobsTable, statusDetail: StatusDetail | null = null): Job {
  return {
    id: row.id,
    capability: row.capability as Capability,
    status: row.status as JobStatus,
    prompt: row.prompt,
    params: JSON.parse(row.params),
    inputAssetIds: JSON.parse(row.input_asset_ids),
    outputAssetIds: JSON.parse(row.output_asset_ids),
    error: row.error_code ? { code: row.error_code, message: row.error_message ?? '' } : null,
    progress: row.progress,
    engine: row.engine,
    webhookUrl: row.webhook_url,
    metadata: row.metadata === null ? null : JSON.parse(row.metadata),
    createdAt: iso(Math.floor(Number(row.created_at_us) / 1000)),
    updatedAt: iso(Number(row.updated_at)),
    startedAt: iso(row.started_at === null ? null : Number(row.started_at)),
    finishedAt: iso(row.finished_at === null ? null : Number(row.finished_at)),
    statusDetail,
  };
}
