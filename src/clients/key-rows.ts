import type { ApiKey } from '../config/index.ts';
import type { Tx } from '../db/index.ts';
import { hashKey, makeKey } from './keys.ts';

/**
 * The only module that writes `keys` (console keys) and `env_keys` (what is kept of the env
 * keys: first seen, last used). The console makes and revokes keys (admin.ts), start-up notes the
 * env keys (admin.ts), and the API stamps their last use (api/auth.ts, in batches).
 */

/** A fresh console key for `clientId`, written; the secret is in the answer only (shown once). */
export async function insertNewKey(tx: Tx, opts: { clientId: string; expiresAt: number | null; now: number }): Promise<ReturnType<typeof makeKey>> {
  const key = makeKey();
  await tx.insertInto('keys').values({ id: key.id, client_id: opts.clientId, secret_hash: key.hash, created_at: opts.now, expires_at: opts.expiresAt }).execute();
  return key;
}

export async function markKeyRevoked(tx: Tx, keyId: string, now: number): Promise<void> {
  await tx.updateTable('keys').set({ revoked_at: now }).where('id', '=', keyId).execute();
}

/** Console keys used at `at`; a later stamp (another instance's) is kept. */
export async function stampKeysUsed(db: Tx, keyIds: readonly string[], at: number): Promise<void> {
  if (keyIds.length === 0) return;
  await db
    .updateTable('keys')
    .set({ last_used_at: at })
    .where('id', 'in', keyIds)
    .where((eb) => eb.or([eb('last_used_at', 'is', null), eb('last_used_at', '<', at)]))
    .execute();
}

/** Start-up: each env key gets its row, first seen now (an existing row keeps its own). */
export async function rememberEnvKeys(tx: Tx, envKeys: readonly ApiKey[], now: number): Promise<void> {
  if (envKeys.length === 0) return;
  await tx
    .insertInto('env_keys')
    .values(envKeys.map((k) => ({ hash: hashKey(k.key), client_id: k.clientId, first_seen_at: now })))
    .onConflict((oc) => oc.column('hash').doNothing())
    .execute();
}

/** The env key with SHA-256 `hash` (hex) used at `at`; a later stamp is kept. */
export async function stampEnvKeyUsed(db: Tx, hash: string, at: number): Promise<void> {
  await db
    .updateTable('env_keys')
    .set({ last_used_at: at })
    .where('hash', '=', hash)
    .where((eb) => eb.or([eb('last_used_at', 'is', null), eb('last_used_at', '<', at)]))
    .execute();
}
