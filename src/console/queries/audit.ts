import type { DbHandle } from '../../db/index.ts';
import { iso } from '../../lib/clock.ts';
import { readConsole } from './reader.ts';
import { Invalid } from '../../lib/errors.ts';

/** One audit entry as the console API answers it (CONTRACT "Browser console"). */
export interface AuditView {
  id: string;
  /** ISO time. */
  at: string;
  actor: string;
  action: string;
  target: string;
  detail: Record<string, unknown>;
}

export interface AuditFilter {
  limit: number;
  /** The `nextBefore` of the previous page: an entry id, exclusive. */
  before?: string;
}

const AUDIT_ID = /^aud_[0-9a-hjkmnp-tv-z]{26}$/;

/** `limit` (1–200, default 50) and `before` (an `aud_…` id). Throws Invalid naming the parameter. */
export function parseAuditFilter(query: unknown): AuditFilter {
  const q = (query ?? {}) as Record<string, unknown>;
  for (const key of Object.keys(q)) {
    if (!['limit', 'before', 'lang'].includes(key)) throw new Invalid(null, `unknown query parameter: ${key}`);
  }
  let limit = 50;
  if (q.limit !== undefined && q.limit !== '') {
    const n = typeof q.limit === 'string' && /^\d{1,4}$/.test(q.limit) ? Number(q.limit) : Number.NaN;
    if (!Number.isInteger(n) || n < 1 || n > 200) throw new Invalid('limit', 'must be an integer from 1 to 200');
    limit = n;
  }
  const before = q.before;
  if (before !== undefined && before !== '' && (typeof before !== 'string' || !AUDIT_ID.test(before))) throw new Invalid('before', 'must be an audit entry id (aud_…)');
  return { limit, before: typeof before === 'string' && before !== '' ? before : undefined };
}

function parseDetail(text: string): Record<string, unknown> {
  try {
    const value = JSON.parse(text) as unknown;
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : { value };
  } catch {
    return { text };
  }
}

/**
 * Audit entries, newest first. Ids are time-ordered ULIDs made where the change happens, so
 * paging walks the primary key backwards: `before` is the last id of the previous page.
 */
export async function listAudit(handle: DbHandle, filter: AuditFilter): Promise<{ entries: AuditView[]; nextBefore: string | null }> {
  return readConsole(handle, async (db) => {
    let select = db.selectFrom('audit_log').selectAll();
    if (filter.before !== undefined) select = select.where('id', '<', filter.before);
    const rows = await select
      .orderBy('id', 'desc')
      .limit(filter.limit + 1)
      .execute();
    const kept = rows.slice(0, filter.limit);
    return {
      entries: kept.map((r) => ({ id: r.id, at: iso(Number(r.at)), actor: r.actor, action: r.action, target: r.target, detail: parseDetail(r.detail) })),
      nextBefore: rows.length > filter.limit ? kept[kept.length - 1].id : null,
    };
  });
}

/** A detail's before/after pair, when it has one, as rows of changed fields; null otherwise. */
export function changesOf(detail: Record<string, unknown>): { field: string; before: unknown; after: unknown }[] | null {
  const { before, after } = detail;
  const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (!isObj(before) && !isObj(after)) return null;
  const b = isObj(before) ? before : {};
  const a = isObj(after) ? after : {};
  const fields = [...new Set([...Object.keys(b), ...Object.keys(a)])];
  return fields.map((field) => ({ field, before: b[field], after: a[field] })).filter((c) => JSON.stringify(c.before) !== JSON.stringify(c.after));
}
