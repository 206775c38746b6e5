import type { FastifyInstance } from 'fastify';
import { CAPABILITIES, JOB_STATUSES } from '../../contract/index.ts';
import type { ConsoleDeps } from '../deps.ts';
import { circuits } from '../queries/engines.ts';
import { type Bucket, overview, PERCENTILE_SAMPLE_CAP } from '../queries/overview.ts';
import type { Render } from '../render.ts';

const CHART_W = 480;
const CHART_H = 90;
const AXIS = 12;

/** Bars of a chart as SVG rectangles (computed here: the view only prints numbers; no inline style). */
function bars(buckets: readonly Bucket[], label: (b: Bucket, i: number) => string) {
  const max = Math.max(1, ...buckets.map((b) => b.total));
  const slot = CHART_W / Math.max(1, buckets.length);
  const width = Math.max(1, slot * 0.8);
  const usable = CHART_H - AXIS;
  return {
    width: CHART_W,
    height: CHART_H,
    baseline: usable,
    max,
    bars: buckets.map((b, i) => {
      const h = (b.total / max) * usable;
      const hf = (b.failed / max) * usable;
      return {
        x: (i * slot + (slot - width) / 2).toFixed(1),
        w: width.toFixed(1),
        y: (usable - h).toFixed(1),
        h: h.toFixed(1),
        fy: (usable - hf).toFixed(1),
        fh: hf.toFixed(1),
        total: b.total,
        failed: b.failed,
        start: b.start,
        label: label(b, i),
        labelX: Math.min(CHART_W - 14, Math.max(14, i * slot + slot / 2)).toFixed(1),
      };
    }),
  };
}

export function registerOverview(admin: FastifyInstance, deps: ConsoleDeps, render: Render): void {
  admin.get('/', async (request, reply) => {
    const asked = (request.query as Record<string, unknown>).range;
    const range = asked === '7d' ? '7d' : '24h';
    const now = deps.clock.now();
    const [data, circuitList] = await Promise.all([
      overview(deps.handle, range, now),
      circuits(
        deps.handle,
        deps.engines.all().map((e) => e.name),
        now,
      ),
    ]);
    // Axis labels: every 6th hour (UTC) or every day.
    const chart = bars(data.buckets, (b, i) => (range === '24h' ? (i % 6 === 0 ? `${b.start.slice(11, 13)}:00` : '') : b.start.slice(5, 10)));
    return render(reply, request, 'overview', {
      nav: 'overview',
      range,
      data,
      chart,
      circuits: circuitList,
      statuses: JOB_STATUSES,
      capabilities: CAPABILITIES,
      sampleCap: PERCENTILE_SAMPLE_CAP,
    });
  });
}
