import type { Selectable } from 'kysely';
import { z } from 'zod';
import { recordAudit } from '../audit/index.ts';
import type { ApiKey } from '../config/index.ts';
import type { ClientsTable, DbHandle, KeysTable } from '../db/index.ts';
import { withTransaction } from '../db/transaction.ts';
import { iso, type Clock } from '../lib/clock.ts';
import { Conflict, Invalid, NotFound } from '../lib/errors.ts';
import { isId } from '../lib/ids.ts';
import { parseWith } from '../lib/validate.ts';
import { fairKeysResume } from '../queue/index.ts';
import { checkNewClientId, rememberClientIds } from './ids.ts';
import { insertNewKey, markKeyRevoked, rememberEnvKeys } from './key-rows.ts';
import { hashKey, keyPrefix } from './keys.ts';
import { type ClientView, type KeyView, keyView, lastUsedView, settingsView } from './views.ts';
import { newWebhookSecret, parsePreviousSecrets, previousAfterRotation } from './webhook-secrets.ts';

export type { ClientView, KeyView } from './views.ts';

interface EnvKeyUsage {
  first_seen_at: number;
  last_used_at: number | null;
}

/**
 * Start-up: the env clients' ids are remembered as used (a console client can never take one
 * over unnoticed), and each env key gets its usage row (first seen now, last used by api/auth.ts).
 */
export async function rememberEnvClients(handle: DbHandle, envKeys: ApiKey[], now: number): Promise<void> {
  await withTransaction(handle, async (tx) => {
    await rememberClientIds(
      tx,
      envKeys.map((k) => k.clientId),
      now,
    );
    await rememberEnvKeys(tx, envKeys, now);
  });
}

/** Who makes a change (for the audit log). */
export interface Actor {
  email: string;
}

const createClientSchema = z
  .object({
    id: z.string().min(1).max(64),
    name: z.string().trim().min(1).max(200).optional(),
    /** Take over an id used before (its jobs and assets become the new client's): audited. */
    adopt: z.boolean().optional(),
  })
  .strict();

const createKeySchema = z.object({ expiresAt: z.iso.datetime({ offset: true }).optional() }).strict();

const limit = (max: number) => z.number().int().min(0).max(max).nullable().optional();
const updateClientSchema = z
  .object({
    name: z.string().trim().min(1).max(200).nullable().optional(),
    disabled: z.boolean().optional(),
    rateLimitJobsPerMinute: limit(1_000_000),
    rateLimitRequestsPerMinute: limit(10_000_000),
    maxRunning: limit(1_000_000),
    weight: z.number().int().min(1).max(1000).nullable().optional(),
    allowedEngines: z.array(z.string().min(1).max(64)).max(64).nullable().optional(),
  })
  .strict();

/**
 * API clients and their keys as the console manages them. Clients of ZHINIAN_API_KEYS (and
 * the data dir's default key) are `env` clients: their keys are shown, never changed here,
 * while their settings can be. Every change is written with its audit entry in one transaction.
 */
export function createClientAdmin(opts: {
  handle: DbHandle;
  clock: Clock;
  envKeys: ApiKey[];
  /** The env keys are the generated default key (no ZHINIAN_API_KEYS). */
  envKeysGenerated: boolean;
  /** ZHINIAN_WEBHOOK_SECRET is set: clients without their own secret share it. */
  sharedWebhookSecretSet: boolean;
  engineNames: () => string[];
}) {
  const { handle, clock } = opts;
  const { db } = handle;
  const envClientIds = new Set(opts.envKeys.map((k) => k.clientId));
  // Nothing of an env key is shown, not even a hash prefix (a weak key falls to an offline guess).
  const envKeys = opts.envKeys.map((k, i) => ({
    clientId: k.clientId,
    hash: hashKey(k.key),
    id: `env_${k.clientId}_${opts.envKeys.slice(0, i).filter((o) => o.clientId === k.clientId).length + 1}`,
  }));

  function view(id: string, row: Selectable<ClientsTable> | undefined, keys: Selectable<KeysTable>[], usage: Map<string, EnvKeyUsage>): ClientView {
    const isEnv = envClientIds.has(id);
    const ownSecret = Boolean(row?.webhook_secret);
    const envKeyViews = envKeys
      .filter((k) => k.clientId === id)
      .map((k): KeyView => {
        const used = usage.get(k.hash);
        const createdAt = used ? Number(used.first_seen_at) : null;
        return {
          id: k.id,
          prefix: '',
          origin: opts.envKeysGenerated ? 'generated' : 'env',
          createdAt: createdAt === null ? null : iso(createdAt),
          lastUsedAt: used ? lastUsedView(used.last_used_at, createdAt) : null,
          expiresAt: null,
          revokedAt: null,
        };
      });
    return {
      id,
      name: row?.name ?? id,
      source: isEnv ? 'env' : 'console',
      disabled: Number(row?.disabled ?? 0) === 1,
      createdAt: row ? iso(Number(row.created_at)) : null,
      // A console key stays listed (and revocable) if its client id later appears in the env too.
      keys: [...envKeyViews, ...keys.map((k) => keyView(k, keyPrefix(k.id)))],
      settings: settingsView(row),
      webhookSigning: ownSecret ? 'own' : opts.sharedWebhookSecretSet ? 'shared' : 'unsigned',
      sharesWebhookSecret: !ownSecret && opts.sharedWebhookSecretSet,
    };
  }

  async function envKeyUsage(clientId?: string): Promise<Map<string, EnvKeyUsage>> {
    let query = db.selectFrom('env_keys').select(['hash', 'first_seen_at', 'last_used_at']);
    if (clientId !== undefined) query = query.where('client_id', '=', clientId);
    return new Map((await query.execute()).map((r) => [r.hash, r]));
  }

  /** A client that exists: in the env, or made in the console. */
  async function existing(id: string): Promise<{ row: Selectable<ClientsTable> | undefined }> {
    const row = await db.selectFrom('clients').selectAll().where('id', '=', id).executeTakeFirst();
    if (!envClientIds.has(id) && row?.source !== 'console') throw new NotFound('Client');
    return { row };
  }

  async function get(id: string): Promise<ClientView> {
    const { row } = await existing(id);
    const keys = await db.selectFrom('keys').selectAll().where('client_id', '=', id).orderBy('created_at').execute();
    return view(id, row, keys, await envKeyUsage(id));
  }

  return {
    get,

    async list(): Promise<ClientView[]> {
      const rows = await db.selectFrom('clients').selectAll().execute();
      const keys = await db.selectFrom('keys').selectAll().orderBy('created_at').execute();
      const usage = await envKeyUsage();
      const byId = new Map(rows.map((r) => [r.id, r]));
      const keysOf = new Map<string, Selectable<KeysTable>[]>();
      for (const k of keys) {
        const list = keysOf.get(k.client_id);
        if (list) list.push(k);
        else keysOf.set(k.client_id, [k]);
      }
      const ids = new Set([...envClientIds, ...rows.filter((r) => r.source === 'console').map((r) => r.id)]);
      return [...ids].sort().map((id) => view(id, byId.get(id), keysOf.get(id) ?? [], usage));
    },

    /**
     * A new console client, its first key and its own webhook signing secret (both returned this
     * once). Its id must never have been used, unless the admin adopts it (audited), and must not
     * look like another (clients/ids.ts).
     */
    async create(actor: Actor, body: unknown): Promise<{ client: ClientView; key: { id: string; prefix: string; secret: string }; webhookSecret: string; adopted: boolean }> {
      const input = parseWith(createClientSchema, body);
      if (envClientIds.has(input.id)) throw new Conflict(`Client "${input.id}" exists (from ZHINIAN_API_KEYS).`);
      const now = clock.now();
      const webhookSecret = newWebhookSecret();
      const { key, adopted } = await withTransaction(handle, async (tx) => {
        const { adopted } = await checkNewClientId(handle, tx, input.id, { adopt: input.adopt === true, envIds: envClientIds });
        const fields = { name: input.name ?? null, source: 'console', webhook_secret: webhookSecret, webhook_secrets_previous: null, updated_at: now };
        const taken = await tx.selectFrom('clients').select('id').where('id', '=', input.id).executeTakeFirst();
        if (taken) await tx.updateTable('clients').set(fields).where('id', '=', input.id).execute();
        else
          await tx
            .insertInto('clients')
            .values({ id: input.id, ...fields, created_at: now })
            .execute();
        await rememberClientIds(tx, [input.id], now);
        const made = await insertNewKey(tx, { clientId: input.id, expiresAt: null, now });
        const detail = { name: input.name ?? null, keyId: made.id, adopted };
        await recordAudit(tx, { actor: actor.email, action: adopted ? 'client.adopt' : 'client.create', target: input.id, detail }, now);
        return { key: made, adopted };
      });
      return { client: await get(input.id), key: { id: key.id, prefix: key.prefix, secret: key.secret }, webhookSecret, adopted };
    },

    /** Another key for a console client; older keys keep working until revoked. */
    async createKey(actor: Actor, clientId: string, body: unknown): Promise<{ key: { id: string; prefix: string; secret: string } }> {
      const input = parseWith(createKeySchema, body ?? {});
      await existing(clientId);
      if (envClientIds.has(clientId)) throw new Conflict('The keys of this client come from ZHINIAN_API_KEYS; change them there.');
      const expiresAt = input.expiresAt === undefined ? null : Date.parse(input.expiresAt);
      const now = clock.now();
      if (expiresAt !== null && expiresAt <= now) throw new Invalid('expiresAt', 'must be in the future');
      const key = await withTransaction(handle, async (tx) => {
        const made = await insertNewKey(tx, { clientId, expiresAt, now });
        await recordAudit(tx, { actor: actor.email, action: 'key.create', target: made.id, detail: { clientId, expiresAt: input.expiresAt ?? null } }, now);
        return made;
      });
      return { key: { id: key.id, prefix: key.prefix, secret: key.secret } };
    },

    async revokeKey(actor: Actor, keyId: string): Promise<{ key: KeyView }> {
      if (!isId('key', keyId)) throw new NotFound('Key');
      const now = clock.now();
      const row = await withTransaction(handle, async (tx) => {
        const before = await tx.selectFrom('keys').selectAll().where('id', '=', keyId).executeTakeFirst();
        if (!before) throw new NotFound('Key');
        if (before.revoked_at !== null) return before;
        await markKeyRevoked(tx, keyId, now);
        await recordAudit(tx, { actor: actor.email, action: 'key.revoke', target: keyId, detail: { clientId: before.client_id } }, now);
        return { ...before, revoked_at: now };
      });
      return { key: keyView(row, keyPrefix(row.id)) };
    },

    /** Changes a client's settings; `null` resets one to the env default. */
    async update(actor: Actor, clientId: string, body: unknown): Promise<{ client: ClientView }> {
      const patch = parseWith(updateClientSchema, body);
      if (patch.allowedEngines) {
        const known = new Set(opts.engineNames());
        const unknown = patch.allowedEngines.find((name) => !known.has(name));
        if (unknown !== undefined) throw new Invalid('allowedEngines', `unknown engine "${unknown}"`);
      }
      const now = clock.now();
      await withTransaction(handle, async (tx) => {
        const before = await tx.selectFrom('clients').selectAll().where('id', '=', clientId).executeTakeFirst();
        if (!envClientIds.has(clientId) && before?.source !== 'console') throw new NotFound('Client');
        const changes = {
          ...(patch.name !== undefined && { name: patch.name }),
          ...(patch.disabled !== undefined && { disabled: patch.disabled ? 1 : 0 }),
          ...(patch.rateLimitJobsPerMinute !== undefined && { rate_limit_jobs_per_minute: patch.rateLimitJobsPerMinute }),
          ...(patch.rateLimitRequestsPerMinute !== undefined && { rate_limit_requests_per_minute: patch.rateLimitRequestsPerMinute }),
          ...(patch.maxRunning !== undefined && { max_running: patch.maxRunning }),
          ...(patch.weight !== undefined && { weight: patch.weight }),
          ...(patch.allowedEngines !== undefined && { allowed_engines: patch.allowedEngines === null ? null : JSON.stringify([...new Set(patch.allowedEngines)]) }),
        };
        if (before) {
          await tx
            .updateTable('clients')
            .set({ ...changes, updated_at: now })
            .where('id', '=', clientId)
            .execute();
        } else {
          await tx
            .insertInto('clients')
            .values({ id: clientId, ...changes, created_at: now, updated_at: now })
            .execute();
        }
        const snapshot = (row: Selectable<ClientsTable> | undefined) => ({ name: row?.name ?? null, disabled: Number(row?.disabled ?? 0) === 1, ...settingsView(row) });
        // Enabled again: its jobs rejoin the fair order where the others are, not all ahead of them.
        if (patch.disabled === false && Number(before?.disabled ?? 0) === 1) await fairKeysResume({ tx, dialect: handle.dialect, log: [] }, clientId);
        const after = await tx.selectFrom('clients').selectAll().where('id', '=', clientId).executeTakeFirst();
        await recordAudit(tx, { actor: actor.email, action: 'client.update', target: clientId, detail: { before: snapshot(before), after: snapshot(after) } }, now);
      });
      return { client: await get(clientId) };
    },

    /**
     * A new webhook secret (returned this once). The one it replaces (the client's own, or the
     * shared ZHINIAN_WEBHOOK_SECRET on a first rotation) keeps signing beside it for 24 h, and so
     * does each earlier one until its own overlap ends.
     */
    async rotateWebhookSecret(actor: Actor, clientId: string): Promise<{ secret: string }> {
      const secret = newWebhookSecret();
      const now = clock.now();
      await withTransaction(handle, async (tx) => {
        const before = await tx.selectFrom('clients').selectAll().where('id', '=', clientId).executeTakeFirst();
        if (!envClientIds.has(clientId) && before?.source !== 'console') throw new NotFound('Client');
        const previous = previousAfterRotation({
          current: before?.webhook_secret ?? null,
          previous: parsePreviousSecrets(before?.webhook_secrets_previous ?? null),
          sharedSecretSet: opts.sharedWebhookSecretSet,
          now,
        });
        const rotation = { webhook_secret: secret, webhook_secrets_previous: JSON.stringify(previous), updated_at: now };
        if (before) await tx.updateTable('clients').set(rotation).where('id', '=', clientId).execute();
        else
          await tx
            .insertInto('clients')
            .values({ id: clientId, ...rotation, created_at: now })
            .execute();
        const detail = { previousKeptUntil: previous.map((p) => iso(p.until)) };
        await recordAudit(tx, { actor: actor.email, action: 'client.webhook_secret.rotate', target: clientId, detail }, now);
      });
      return { secret };
    },
  };
}

export type ClientAdmin = ReturnType<typeof createClientAdmin>;
