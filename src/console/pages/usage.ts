import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ConsoleDeps } from '../deps.ts';
import { dayString, parseUsageFilter, perDay, type UsageFilter, type UsageTotals, usageCsv, usageQuery, usageRows, usageSummary } from '../queries/usage.ts';
import { filterErrorOf } from './filter-error.ts';
import type { Render } from '../render.ts';
import { titleOf } from './admin-screens.ts';

const CHART = { width: 720, height: 120, top: 8, bottom: 18 };
/** Rows in the page's table; the CSV has them all. */
const PAGE_ROWS = 500;

/** Bars of the per-day chart (inline SVG, no script, no style attributes): failed/expired stacked on the rest. */
function usageChart(byDay: ReadonlyMap<string, UsageTotals>, filter: UsageFilter) {
  const days = perDay(byDay, filter);
  const max = Math.max(1, ...days.map((d) => d.totals.jobs));
  const plot = CHART.height - CHART.top - CHART.bottom;
  const step = CHART.width / days.length;
  const w = Math.max(1, step * 0.8);
  const bars = days.map((d, i) => {
    const bad = d.totals.failed + d.totals.expired;
    const okH = ((d.totals.jobs - bad) / max) * plot;
    const badH = (bad / max) * plot;
    const base = CHART.top + plot;
    const r = (n: number) => Math.round(n * 10) / 10;
    return { day: d.day, jobs: d.totals.jobs, failed: bad, x: r(i * step + (step - w) / 2), w: r(w), okY: r(base - okH), okH: r(okH), badY: r(base - okH - badH), badH: r(badH) };
  });
  const labelEvery = Math.max(1, Math.ceil(days.length / 8));
  const labels = bars.filter((_, i) => i % labelEvery === 0).map((b) => ({ x: Math.round(b.x + b.w / 2), text: b.day.slice(5) }));
  return { ...CHART, max, bars, labels, axisY: CHART.top + plot };
}

function fields(query: unknown): Record<string, string> {
  const q = (query ?? {}) as Record<string, unknown>;
  const s = (v: unknown) => (typeof v === 'string' ? v : '');
  return { from: s(q.from), to: s(q.to), clientId: s(q.clientId) };
}

/** `/admin/usage` (table and chart) and `/admin/usage.csv` (the same rows as CSV), with the filters of GET /admin/api/usage. */
export function registerUsagePages(admin: FastifyInstance, deps: ConsoleDeps, render: Render): void {
  admin.get('/usage', async (request: FastifyRequest, reply: FastifyReply) => {
    const form = fields(request.query);
    let filter: UsageFilter;
    try {
      filter = parseUsageFilter(request.query, deps.clock.now());
    } catch (e) {
      const message = filterErrorOf(e);
      reply.status(400);
      const today = Math.floor(deps.clock.now() / 86_400_000);
      return render(reply, request, 'usage', {
        nav: 'usage',
        title: titleOf(request, 'usage.title'),
        error: message,
        form,
        rows: [],
        totals: [],
        rowCount: 0,
        chart: usageChart(new Map(), { fromDay: today, toDay: today }),
        csvQuery: {},
      });
    }
    // The table shows the first rows; totals and the chart cover them all (sums made by the database).
    const summary = await usageSummary(deps.handle, filter, PAGE_ROWS);
    const q = usageQuery(filter);
    return render(reply, request, 'usage', {
      nav: 'usage',
      title: titleOf(request, 'usage.title'),
      error: null,
      form: { from: q.from, to: q.to, clientId: q.clientId },
      rows: summary.rows,
      rowCount: summary.rowCount,
      totals: [...summary.byClient].map(([clientId, t]) => ({ clientId, ...t })),
      chart: usageChart(summary.byDay, filter),
      csvQuery: q,
    });
  });

  admin.get('/usage.csv', async (request, reply) => {
    const filter = parseUsageFilter(request.query, deps.clock.now());
    const rows = await usageRows(deps.handle, filter);
    const name = `usage-${dayString(filter.fromDay)}-${dayString(filter.toDay)}${filter.clientId ? `-${filter.clientId.replace(/[^A-Za-z0-9._-]/g, '_')}` : ''}.csv`;
    return reply.type('text/csv; charset=utf-8').header('content-disposition', `attachment; filename="${name}"`).send(usageCsv(rows));
  });
}
