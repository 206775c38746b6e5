import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from '../deps.ts';
import { changesOf, listAudit, parseAuditFilter } from '../queries/audit.ts';
import { filterErrorOf } from './filter-error.ts';
import type { Render } from '../render.ts';
import { titleOf } from './admin-screens.ts';

/** `/admin/audit?limit&before`: every change made in the console, newest first, before/after side by side. */
export function registerAuditPage(admin: FastifyInstance, deps: ConsoleDeps, render: Render): void {
  admin.get('/audit', async (request, reply) => {
    const q = request.query as Record<string, unknown>;
    const limit = typeof q.limit === 'string' ? q.limit : '';
    let error: string | null = null;
    let page: Awaited<ReturnType<typeof listAudit>> = { entries: [], nextBefore: null };
    try {
      page = await listAudit(deps.handle, parseAuditFilter(q));
    } catch (e) {
      error = filterErrorOf(e);
      reply.status(400);
    }
    const show = (v: unknown) => (v === undefined ? '—' : typeof v === 'string' ? v : JSON.stringify(v));
    return render(reply, request, 'audit', {
      nav: 'audit',
      title: titleOf(request, 'audit.title'),
      error,
      entries: page.entries.map((e) => {
        const changes = changesOf(e.detail);
        const rest = Object.fromEntries(Object.entries(e.detail).filter(([k]) => !(changes && (k === 'before' || k === 'after'))));
        return { ...e, changes: changes?.map((c) => ({ field: c.field, before: show(c.before), after: show(c.after) })) ?? null, rest: Object.keys(rest).length > 0 ? rest : null };
      }),
      nextBefore: page.nextBefore,
      paged: typeof q.before === 'string' && q.before !== '',
      keep: { limit },
    });
  });
}
