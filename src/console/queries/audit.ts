import { type AuditPage, readAudit } from '../../audit/index.ts';
import type { DbHandle } from '../../db/index.ts';
import { Invalid } from '../../lib/errors.ts';
import { readConsole } from './reader.ts';

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

/** A page of the audit log, read within the console's time limit (queries/reader.ts). */
export function listAudit(handle: DbHandle, filter: AuditFilter): Promise<AuditPage> {
  return readConsole(handle, (db) => readAudit(db, filter));
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
