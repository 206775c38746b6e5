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
}

/** A job row as the API shows it. */
export function toJob(row: JobsTable): Job {
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
  };
}
