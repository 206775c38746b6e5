import type { Kysely } from 'kysely';
import type { Database } from '../db/index.ts';
import { newId } from '../lib/ids.ts';

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

/** Records a change; pass the transaction that makes it, so both happen or neither. */
export async function recordAudit(db: Kysely<Database>, entry: AuditEntry, at: number): Promise<void> {
  await db
    .insertInto('audit_log')
    .values({ id: newId('aud'), at, actor: entry.actor, action: entry.action, target: entry.target, detail: JSON.stringify(entry.detail) })
    .execute();
}
