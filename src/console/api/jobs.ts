import type { FastifyInstance } from 'fastify';
import { withTransaction } from '../../db/transaction.ts';
import { NotFound } from '../../lib/errors.ts';
import { recordAudit } from '../../audit/index.ts';
import type { ConsoleDeps } from '../deps.ts';
import { jobDetail, listJobs, parseJobFilter } from '../queries/jobs.ts';
import { actorOf } from './clients.ts';

/** Jobs across clients: list, detail (history, lease, deliveries), cancel. */
export function registerJobApi(admin: FastifyInstance, deps: ConsoleDeps): void {
  admin.get('/api/jobs', async (request) => listJobs(deps.handle, deps.jobs.present, parseJobFilter(request.query)));

  admin.get<{ Params: { id: string } }>('/api/jobs/:id', async (request) => {
    const detail = await jobDetail(deps.handle, deps.jobs.present, request.params.id, deps.clock.now());
    if (!detail) throw new NotFound('Job');
    return { job: detail.job, attempts: detail.attempts, lease: detail.lease, deliveries: detail.deliveries };
  });

  admin.post<{ Params: { id: string } }>('/api/jobs/:id/cancel', async (request) => {
    const detail = await jobDetail(deps.handle, deps.jobs.present, request.params.id, deps.clock.now());
    if (!detail) throw new NotFound('Job');
    // The same cancel as the client's own (queue/settle.ts): one state machine for both.
    const job = await deps.jobs.cancel(detail.job.clientId, detail.job.id);
    await withTransaction(deps.handle, (tx) =>
      recordAudit(
        tx,
        { actor: actorOf(request).email, action: 'job.cancel', target: job.id, detail: { clientId: detail.job.clientId, before: detail.job.status } },
        deps.clock.now(),
      ),
    );
    return { job: { ...job, clientId: detail.job.clientId } };
  });
}
