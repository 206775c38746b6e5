import type { Selectable } from 'kysely';
import { z } from 'zod';
import { CAPABILITIES, JOB_STATUSES, type Job, type JobAttempt } from '../../contract/index.ts';
import type { Db, DbHandle, JobsTable } from '../../db/index.ts';
import type { JobPresenter } from '../../jobs/index.ts';
import { jobAttemptsOf } from '../../queue/index.ts';
import { iso } from '../../lib/clock.ts';
import { isId } from '../../lib/ids.ts';
import { parseWith } from '../../lib/validate.ts';
import { readConsole } from './reader.ts';
import { deliveriesOfJob, type DeliveryView } from '../../webhooks/delivery-view.ts';

/** A job as the console shows it: the API's job (with `statusDetail`), and whose it is. */
export type AdminJob = Job & { clientId: string };

async function toAdminJobs(db: Db, present: JobPresenter, rows: readonly Selectable<JobsTable>[]): Promise<AdminJob[]> {
  const jobs = await present.jobs(db, rows as JobsTable[]);
  return jobs.map((job, i) => ({ ...job, clientId: rows[i]!.client_id }));
}

const timeParam = z.union([z.iso.datetime({ offset: true }), z.iso.datetime({ local: true }), z.iso.date()]).transform((v) => Date.parse(v));

/** Filters of the jobs list (query parameters of `GET /admin/api/jobs` and `/admin/jobs`); empty strings mean "any". */
const jobFilterSchema = z
  .object({
    clientId: z.string().max(128).optional(),
    status: z.enum(JOB_STATUSES).optional(),
    capability: z.enum(CAPABILITIES).optional(),
    engine: z.string().max(64).optional(),
    /** Created at or after (ISO 8601). */
    from: timeParam.optional(),
    /** Created before (ISO 8601). */
    to: timeParam.optional(),
    id: z.string().max(64).optional(),
    /** The `nextBefore` of the previous page. */
    before: z.string().max(64).optional(),
    limit: z.coerce.number().int().min(1).max(200).optional(),
  })
  .strict();

export type JobFilter = z.infer<typeof jobFilterSchema>;

/** Query parameters as a filter; an empty value is no filter. Throws Invalid naming the parameter. */
export function parseJobFilter(query: unknown): JobFilter {
  const given = Object.fromEntries(Object.entries((query ?? {}) as Record<string, unknown>).filter(([, v]) => v !== '' && v !== undefined));
  return parseWith(jobFilterSchema, given, 'query parameter');
}

/**
 * Jobs across clients, newest first. Job ids are time-ordered (ULIDs), so paging walks the
 * primary key backwards: `before` is the last id of the previous page, exclusive.
 */
export async function listJobs(handle: DbHandle, present: JobPresenter, filter: JobFilter): Promise<{ jobs: AdminJob[]; nextBefore: string | null }> {
  return readConsole(handle, async (db) => {
    const limit = filter.limit ?? 50;
    let select = db.selectFrom('jobs').selectAll();
    if (filter.id !== undefined) select = select.where('id', '=', filter.id);
    if (filter.clientId !== undefined) select = select.where('client_id', '=', filter.clientId);
    if (filter.status !== undefined) select = select.where('status', '=', filter.status);
    if (filter.capability !== undefined) select = select.where('capability', '=', filter.capability);
    if (filter.engine !== undefined) select = select.where('engine', '=', filter.engine);
    if (filter.from !== undefined) select = select.where('created_at_us', '>=', filter.from * 1000);
    if (filter.to !== undefined) select = select.where('created_at_us', '<', filter.to * 1000);
    if (filter.before !== undefined) select = select.where('id', '<', filter.before);
    const rows = await select
      .orderBy('id', 'desc')
      .limit(limit + 1)
      .execute();
    const kept = rows.slice(0, limit);
    return { jobs: await toAdminJobs(db, present, kept), nextBefore: rows.length > limit ? kept[kept.length - 1]!.id : null };
  });
}

export interface JobDetail {
  job: AdminJob;
  row: Selectable<JobsTable>;
  /** One entry per time a worker took the job, oldest first (CONTRACT "Why a job waits, and its history"). */
  attempts: JobAttempt[];
  /** The current run: attempts counted against ZHINIAN_MAX_ATTEMPTS, who holds the lease and until when. */
  lease: { counted: number; owner: string | null; until: string | null };
  deliveries: DeliveryView[];
}

/** One job of any client with its history and its webhook deliveries (as its client sees them); null when there is none. */
export async function jobDetail(handle: DbHandle, present: JobPresenter, id: string, now: number): Promise<JobDetail | null> {
  return readConsole(handle, async (db) => {
    if (!isId('job', id)) return null;
    const row = await db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) return null;
    const deliveries = await deliveriesOfJob(db, id, now);
    const held = row.status === 'running' && row.lease_owner !== null;
    const [job] = await toAdminJobs(db, present, [row]);
    return {
      job: job!,
      row,
      attempts: await jobAttemptsOf(db, id),
      lease: { counted: Number(row.attempts), owner: held ? row.lease_owner : null, until: held && row.run_at !== null ? iso(Number(row.run_at)) : null },
      deliveries,
    };
  });
}
