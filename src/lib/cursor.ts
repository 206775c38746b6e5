import { Invalid } from './errors.ts';

/**
 * Paging cursors are ISO 8601 times. Rows sort by a per-client unique microsecond key, so a
 * `nextBefore` carries microseconds when the row shares its millisecond with others
 * (`2026-11-24T08:00:00.123004Z`); a plain millisecond time works as `before` too.
 */
export function formatCursor(us: number): string {
  const ms = Math.floor(us / 1000);
  const rest = us - ms * 1000;
  const base = new Date(ms).toISOString();
  return rest === 0 ? base : `${base.slice(0, -1)}${String(rest).padStart(3, '0')}Z`;
}

const ISO = /^(\d{4}-\d{2}-\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2}))?$/;

/** Parses `before`: an ISO 8601 date or date-time (with zone), up to microsecond precision. */
export function parseCursor(value: string, field = 'before'): number {
  const m = ISO.exec(value);
  if (!m) throw new Invalid(field, 'must be an ISO 8601 time such as 2026-11-24T08:00:00.000Z');
  const [, date, hh = '00', mm = '00', ss = '00', frac = '', zone = 'Z'] = m;
  const ms = Date.parse(`${date}T${hh}:${mm}:${ss}${zone.replace(/^([+-]\d{2})(\d{2})$/, '$1:$2')}`);
  // Date.parse rolls impossible dates over (2026-02-30 → March 2): insist the day exists.
  const [year, month, day] = date.split('-').map(Number);
  const probe = new Date(Date.UTC(year, month - 1, day));
  if (Number.isNaN(ms) || probe.getUTCFullYear() !== year || probe.getUTCMonth() !== month - 1 || probe.getUTCDate() !== day) {
    throw new Invalid(field, 'is not a valid time');
  }
  const micros = Number(frac.padEnd(6, '0').slice(0, 6));
  return ms * 1000 + micros;
}
