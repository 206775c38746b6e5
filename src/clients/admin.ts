import { randomBytes } from 'node:crypto';
import type { Selectable } from 'kysely';
import { z } from 'zod';
import { recordAudit } from '../console/audit.ts';
import type { ApiKey } from '../config/index.ts';
import type { ClientsTable, DbHandle, KeysTable } from '../db/index.ts';
import { withTransaction } from '../db/transaction.ts';
import { iso, type Clock } from '../lib/clock.ts';
import { Conflict, Invalid, NotFound } from '../lib/errors.ts';
import { isId } from '../lib/ids.ts';
import { parseWith } from '../lib/validate.ts';
import { hashKey, keyPrefix, makeKey } from './keys.ts';

/** A previous webhook secret keeps signing beside the new one this long after a rotation. */
const WEBHOOK_SECRET_OVERLAP_MS = 24 * 3_600_000;

export interface KeyView {
  id: string;
  prefix: string;
  createdAt: string | null;
  lastUsedAt: string | null;
  expiresAt: string | null;
  revokedAt: string | null;
}

/** A client's own settings (null: the env default) as the console edits them. */
export interface ClientSettingsView {
  rateLimitJobsPerMinute: number | null;
  rateLimitRequestsPerMinute: number | null;
  maxRunning: number | null;
  weight: number | null;
  allowedEngines: string[] | null;
  webhookSecretSet: boolean;
}

export interface ClientView {
  id: string;
  name: string;
  /** `env`: keys from ZHINIAN_API_KEYS (read-only here); `console`: made in the console. */
  source: 'env' | 'console';
  disabled: boolean;
  createdAt: string | null;
  keys: KeyView[];
  settings: ClientSettingsView;
}

/** Who makes a change (for the audit log). */
export interface Actor {
  email: string;
}

const CLIENT_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const createClientSchema = z
  .object({
    id: z.string().regex(CLIENT_ID, '1–64 letters, digits, ".", "_" or "-", starting with a letter or digit'),
    name: z.string().trim().min(1).max(200).optional(),
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

function envKeyView(key: ApiKey): KeyView {
  // Env keys have no row: a stable id from the hash, and the first characters only.
  return { id: `env_${hashKey(key.key).slice(0, 16)}`, prefix: `${key.key.slice(0, 4)}…`, createdAt: null, lastUsedAt: null, expiresAt: null, revokedAt: null };
}

function keyView(row: Selectable<KeysTable>): KeyView {
  const at = (v: number | null) => (v === null ? null : iso(Number(v)));
  return {
    id: row.id,
    prefix: keyPrefix(row.id),
    createdAt: at(row.created_at),
    lastUsedAt: at(row.last_used_at),
    expiresAt: at(row.expires_at),
    revokedAt: at(row.revoked_at),
  };
}

function settingsView(row: Selectable<ClientsTable> | undefined): ClientSettingsView {
  return {
    rateLimitJobsPerMinute: row?.rate_limit_jobs_per_minute ?? null,
    rateLimitRequestsPerMinute: row?.rate_limit_requests_per_minute ?? null,
    maxRunning: row?.max_running ?? null,
    weight: row?.weight ?? null,
    allowedEngines: row?.allowed_engines ? (JSON.parse(row.allowed_engines) as string[]) : null,
    webhookSecretSet: Boolean(row?.webhook_secret),
  };
}

/**
 * API clients and their keys as the console manages them. Clients of ZHINIAN_API_KEYS (and
 * the data dir's default key) are `env` clients: their keys are shown, never changed here,
 * while their settings can be. Every change is written with its audit entry in one transaction.
 */
export function createClientAdmin(opts: { handle: DbHandle; clock: Clock; envKeys: ApiKey[]; engineNames: () => string[] }) {
  const { handle, clock } = opts;
  const { db } = handle;
  const envClientIds = new Set(opts.envKeys.map((k) => k.clientId));

  function view(id: string, row: Selectable<ClientsTable> | undefined, keys: Selectable<KeysTable>[]): ClientView {
    const isEnv = envClientIds.has(id);
    return {
      id,
      name: row?.name ?? id,
      source: isEnv ? 'env' : 'console',
      disabled: Number(row?.disabled ?? 0) === 1,
      createdAt: row ? iso(Number(row.created_at)) : null,
      keys: isEnv ? opts.envKeys.filter((k) => k.clientId === id).map(envKeyView) : keys.map(keyView),
      settings: settingsView(row),
    };
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
    return view(id, row, keys);
  }

  async function addKey(tx: typeof db, clientId: string, expiresAt: number | null) {
    const key = makeKey();
    await tx.insertInto('keys').values({ id: key.id, client_id: clientId, secret_hash: key.hash, created_at: clock.now(), expires_at: expiresAt }).execute();
    return key;
  }

  return {
    get,

    async list(): Promise<ClientView[]> {
      const rows = await db.selectFrom('clients').selectAll().execute();
      const keys = await db.selectFrom('keys').selectAll().orderBy('created_at').execute();
      const byId = new Map(rows.map((r) => [r.id, r]));
      const ids = new Set([...envClientIds, ...rows.filter((r) => r.source === 'console').map((r) => r.id)]);
      return [...ids].sort().map((id) =>
        view(
          id,
          byId.get(id),
          keys.filter((k) => k.client_id === id),
        ),
      );
    },

    /** A new console client and its first key; the secret is returned this once. */
    async create(actor: Actor, body: unknown): Promise<{ client: ClientView; key: { id: string; prefix: string; secret: string } }> {
      const input = parseWith(createClientSchema, body);
      if (envClientIds.has(input.id)) throw new Conflict(`Client "${input.id}" exists (from ZHINIAN_API_KEYS).`);
      const now = clock.now();
      const key = await withTransaction(handle, async (tx) => {
        const taken = await tx.selectFrom('clients').select('source').where('id', '=', input.id).executeTakeFirst();
        if (taken?.source === 'console') throw new Conflict(`Client "${input.id}" exists.`);
        if (taken) {
          await tx
            .updateTable('clients')
            .set({ source: 'console', name: input.name ?? null, updated_at: now })
            .where('id', '=', input.id)
            .execute();
        } else {
          await tx
            .insertInto('clients')
            .values({ id: input.id, name: input.name ?? null, source: 'console', created_at: now, updated_at: now })
            .execute();
        }
        const made = await addKey(tx, input.id, null);
        await recordAudit(tx, { actor: actor.email, action: 'client.create', target: input.id, detail: { name: input.name ?? null, keyId: made.id } }, now);
        return made;
      });
      return { client: await get(input.id), key: { id: key.id, prefix: key.prefix, secret: key.secret } };
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
        const made = await addKey(tx, clientId, expiresAt);
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
        await tx.updateTable('keys').set({ revoked_at: now }).where('id', '=', keyId).execute();
        await recordAudit(tx, { actor: actor.email, action: 'key.revoke', target: keyId, detail: { clientId: before.client_id } }, now);
        return { ...before, revoked_at: now };
      });
      return { key: keyView(row) };
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
        const after = await tx.selectFrom('clients').selectAll().where('id', '=', clientId).executeTakeFirst();
        await recordAudit(tx, { actor: actor.email, action: 'client.update', target: clientId, detail: { before: snapshot(before), after: snapshot(after) } }, now);
      });
      return { client: await get(clientId) };
    },

    /** A new webhook secret (returned this once); the previous one keeps signing beside it for 24 h. */
    async rotateWebhookSecret(actor: Actor, clientId: string): Promise<{ secret: string }> {
      const secret = `whsec_${randomBytes(24).toString('base64')}`;
      const now = clock.now();
      await withTransaction(handle, async (tx) => {
        const before = await tx.selectFrom('clients').selectAll().where('id', '=', clientId).executeTakeFirst();
        if (!envClientIds.has(clientId) && before?.source !== 'console') throw new NotFound('Client');
        const rotation = {
          webhook_secret: secret,
          webhook_secret_previous: before?.webhook_secret ?? null,
          webhook_secret_previous_until: before?.webhook_secret ? now + WEBHOOK_SECRET_OVERLAP_MS : null,
          updated_at: now,
        };
        if (before) await tx.updateTable('clients').set(rotation).where('id', '=', clientId).execute();
        else
          await tx
            .insertInto('clients')
            .values({ id: clientId, ...rotation, created_at: now })
            .execute();
        await recordAudit(
          tx,
          { actor: actor.email, action: 'client.webhook_secret.rotate', target: clientId, detail: { previousKeptUntil: iso(rotation.webhook_secret_previous_until) } },
          now,
        );
      });
      return { secret };
    },
  };
}

export type ClientAdmin = ReturnType<typeof createClientAdmin>;
