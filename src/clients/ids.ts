import { sql } from 'kysely';
import type { DbHandle, Tx } from '../db/index.ts';
import { asciiLowerCase } from '../lib/ascii.ts';
import { Conflict, Invalid } from '../lib/errors.ts';

/** Ids made in the console: lower case, so no two differ only by case (env ids keep their own rules). */
const CONSOLE_CLIENT_ID = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/** The look-alike form of a client id: `Alice`, `alice.` and `ALICE` all read `alice`. */
const canonicalClientId = (id: string): string => asciiLowerCase(id).replace(/[^a-z0-9]/g, '');

/**
 * Records client ids as used (never forgotten: a later client under the same id would inherit
 * the jobs and assets, and a look-alike would pass for it in a list). Idempotent.
 */
export async function rememberClientIds(tx: Tx, ids: readonly string[], now: number): Promise<void> {
  const unique = [...new Set(ids)];
  if (unique.length === 0) return;
  await tx
    .insertInto('client_ids')
    .values(unique.map((id) => ({ id, canonical: canonicalClientId(id), first_seen_at: now })))
    .onConflict((oc) => oc.column('id').doNothing())
    .execute();
}

/**
 * Whether `id` may become a new console client: well formed, never used before (unless the
 * admin adopts it, taking over what it owns, knowingly), and like no other id once case and
 * punctuation are ignored. Throws Invalid or Conflict naming the reason.
 */
export async function checkNewClientId(handle: DbHandle, tx: Tx, id: string, opts: { adopt: boolean; envIds: ReadonlySet<string> }): Promise<{ adopted: boolean }> {
  // Two admins creating look-alikes at once must not both pass: one at a time (SQLite's write lock does this already).
  if (handle.dialect === 'postgres') await sql`select pg_advisory_xact_lock(hashtext(current_schema() || ':client-ids'))`.execute(tx);
  if (!CONSOLE_CLIENT_ID.test(id)) throw new Invalid('id', 'must be 1–64 lower-case letters, digits, "_" or "-", starting with a letter or digit');
  const consoleIds = await tx.selectFrom('clients').select('id').where('source', '=', 'console').execute();
  const liveIds = new Set([...opts.envIds, ...consoleIds.map((r) => r.id)]);
  if (liveIds.has(id)) throw new Conflict(`Client "${id}" exists.`);
  const canonical = canonicalClientId(id);
  const alike = [...liveIds].find((other) => other !== id && canonicalClientId(other) === canonical);
  const known = await tx.selectFrom('client_ids').select('id').where('canonical', '=', canonical).limit(20).execute();
  const lookAlike = alike ?? known.find((row) => row.id !== id)?.id;
  if (lookAlike !== undefined) throw new Conflict(`Client id "${id}" is too like "${lookAlike}" (ids that differ only in case or punctuation are refused).`);
  const used = known.some((row) => row.id === id);
  if (used && !opts.adopt) {
    throw new Conflict(`Client id "${id}" was used before: its jobs and assets would pass to the new client. Send "adopt": true to take them over knowingly.`);
  }
  return { adopted: used };
}
