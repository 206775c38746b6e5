import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { CAPABILITIES, isTerminal, JOB_STATUSES } from '../../contract/index.ts';
import { isRemoteEngine } from '../../engines/engine.ts';
import { filterErrorOf } from './filter-error.ts';
import type { ConsoleDeps } from '../deps.ts';
import { assetsByIds } from '../queries/assets.ts';
import { type AdminJob, jobDetail, listJobs, parseJobFilter } from '../queries/jobs.ts';
import { renderFragment, type Render } from '../render.ts';

/** The filter form's fields, as given (strings), for the form and the paging links. */
const FILTER_FIELDS = ['clientId', 'status', 'capability', 'engine', 'from', 'to', 'id'] as const;

const str = (v: unknown) => (typeof v === 'string' ? v : undefined);

/** What a row shows beside the job: its run time so far or in all. */
function rowData(job: AdminJob, now: number) {
  const started = job.startedAt ? Date.parse(job.startedAt) : null;
  const finished = job.finishedAt ? Date.parse(job.finishedAt) : null;
  return { job, durationMs: started === null ? null : (finished ?? now) - started, live: !isTerminal(job.status) };
}

export function registerJobPages(admin: FastifyInstance, deps: ConsoleDeps, render: Render): void {
  admin.get('/jobs', async (request: FastifyRequest, reply: FastifyReply) => {
    const q = request.query as Record<string, unknown>;
    const form: Record<string, string> = {};
    for (const field of FILTER_FIELDS) form[field] = typeof q[field] === 'string' ? (q[field] as string) : '';
    let error: string | null = null;
    let page: Awaited<ReturnType<typeof listJobs>> = { jobs: [], nextBefore: null };
    try {
      const filter = parseJobFilter({ ...form, limit: str(q.limit), before: str(q.before) });
      page = await listJobs(deps.handle, deps.jobs.present, filter);
    } catch (e) {
      error = filterErrorOf(e);
      reply.status(400);
    }
    const now = deps.clock.now();
    return render(reply, request, 'jobs', {
      nav: 'jobs',
      form,
      /** The filters and page size, for the paging links. */
      keep: { ...form, limit: str(q.limit) },
      /** A datetime-local input shows only a zone-less value; console.js fills in an ISO one with an offset. */
      localValue: (v: string) => (/^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?$/.test(v) ? v : ''),
      error,
      rows: page.jobs.map((j) => rowData(j, now)),
      nextBefore: page.nextBefore,
      paged: typeof q.before === 'string' && q.before !== '',
      statuses: JOB_STATUSES,
      capabilities: CAPABILITIES,
      engineNames: deps.engines.all().map((e) => e.name),
    });
  });

  /** One row of the jobs table, for htmx to poll while the job is live (a terminal row stops polling). */
  admin.get<{ Params: { id: string } }>('/jobs/:id/row', async (request, reply) => {
    const detail = await jobDetail(deps.handle, deps.jobs.present, request.params.id, deps.clock.now());
    if (!detail) return reply.status(404).type('text/html; charset=utf-8').send('');
    return renderFragment(reply, request, 'partials/job-row', { row: rowData(detail.job, deps.clock.now()) });
  });

  admin.get<{ Params: { id: string } }>('/jobs/:id', async (request, reply) => {
    const detail = await jobDetail(deps.handle, deps.jobs.present, request.params.id, deps.clock.now());
    if (!detail) {
      reply.status(404);
      return render(reply, request, 'partials/not-found', { nav: 'jobs', id: request.params.id });
    }
    const { job, row } = detail;
    const [inputs, outputs] = await Promise.all([assetsByIds(deps.handle, job.inputAssetIds), assetsByIds(deps.handle, job.outputAssetIds)]);
    const engine = deps.engines.get(job.engine);
    return render(reply, request, 'job', {
      nav: 'jobs',
      title: job.id,
      job,
      row: rowData(job, deps.clock.now()),
      attempts: detail.attempts,
      lease: detail.lease,
      deliveries: detail.deliveries,
      engineState: row.engine_state,
      engineKind: engine ? (isRemoteEngine(engine) ? 'remote' : 'local') : null,
      pinned: Number(row.engine_pinned) === 1,
      terminal: isTerminal(job.status),
      /** A queued job without a reason to wait (statusDetail null) waits for a free worker. */
      waitsForWorker: job.status === 'queued' && job.statusDetail === null,
      inputs,
      outputs,
    });
  });
}
