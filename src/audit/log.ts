import type { Db, Tx } from '../db/index.ts';
import { iso } from '../lib/clock.ts';
import { newId } from '../lib/ids.ts';

/**
 * The audit log: every change made in the console, by whom. The only module that writes
 * `audit_log` or knows how its rows are shaped; the code making a change (clients/admin.ts,
 * the console's actions) records it here, and the console reads it back here.
 */

/** One change made in the console, as the audit log keeps it. */
export interface AuditEntry {
  /** Who: the signed-in user's e-mail. */
  actor: string;
  /** What, as `noun.verb`: `client.create`, `key.revoke`, `job.cancel`, `delivery.redeliver`… */
  action: string;
  /** The id it was done to. */
  target: string;
  /** Before/after or the parameters; never a secret. */
  detail: Record<string, unknown>;
}

/** One recorded entry as the console API answers it (CONTRACT "Browser console"). */
interface AuditView extends AuditEntry {
  id: string;
  /** ISO time. */
  at: string;
}

export interface AuditPage {
  entries: AuditView[];
  /** Where the next (older) page starts: the last entry's id; null on the last page. */
  nextBefore: string | null;
}

/** Records a change; pass the transaction that makes it, so both happen or neither. */
export async function recordAudit(db: Tx, entry: AuditEntry, at: number): Promise<void> {
  await db
    .insertInto('audit_log')
    .values({ id: newId('aud'), at, actor: entry.actor, action: entry.action, target: entry.target, detail: JSON.stringify(entry.detail) })
    .execute();
}

/**
 * Entries, newest first. Ids are time-ordered ULIDs made where the change happens, so paging
 * walks the primary key backwards: `before` is the last id of the previous page. `db` is
 * whatever the caller reads with (the console: its time-limited reader).
 */
export async function readAudit(db: Db, filter: { limit: number; before?: string }): Promise<AuditPage> {
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
}

function parseDetail(text: string): Record<string, unknown> {
  try {
    const value = JSON.parse(text) as unknown;
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : { value };
  } catch {
    return { text };
  }
}
