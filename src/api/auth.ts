import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import path from 'node:path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { UrlSigner } from '../assets/index.ts';
import { keyIdOf, stampEnvKeyUsed, stampKeysUsed, type ClientDirectory } from '../clients/index.ts';
import type { ApiKey } from '../config/index.ts';
import type { DbHandle } from '../db/index.ts';
import type { Clock } from '../lib/clock.ts';
import { Unauthorized } from '../lib/errors.ts';
import { readOrCreateSecret } from '../lib/secret-file.ts';

/**
 * Who may call a route, declared on the route itself (`config: { access }`) and read after
 * routing, so it holds however the URL was spelled (percent-escapes, absolute-form targets,
 * trailing slashes: whatever the router accepted is what is checked).
 *  - `key` (the default for every route that says nothing): a valid API key.
 *  - `key-or-signed-link`: a key, or a valid signed link for the asset named by the route's `:id`.
 *  - `public`: nobody needs to be anyone (health, the OpenAPI document, the 404 answer).
 *  - `console`, `console-public`: the browser console's routes, guarded by its session
 *    (console/index.ts); an API key opens none of them.
 */
type Access = 'key' | 'key-or-signed-link' | 'public' | 'console' | 'console-public';

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: Access;
  }
  interface FastifyRequest {
    /** The client whose key authenticated the request; null until then (and on public routes). */
    clientId: string | null;
    /** The asset a valid signed download link opens (no API key needed for that one download). */
    signedAssetId: string | null;
  }
}

export function registerAccessControl(app: FastifyInstance, deps: { auth: Authenticator; signer: UrlSigner }): void {
  app.decorateRequest('clientId', null);
  app.decorateRequest('signedAssetId', null);
  app.addHook('onRequest', async (request) => {
    // The not-found answer reveals nothing, so unknown paths answer 404 with or without a key.
    if (request.is404) return;
    const access = request.routeOptions.config.access ?? 'key';
    if (access === 'public' || access === 'console' || access === 'console-public') return;
    if (access === 'key-or-signed-link') {
      const query = request.query as Record<string, unknown>;
      if (query.signature !== undefined || query.expires !== undefined) {
        const assetId = (request.params as { id?: string }).id ?? '';
        const { expires, signature } = query;
        if (typeof expires !== 'string' || typeof signature !== 'string' || !deps.signer.verify(assetId, expires, signature)) {
          throw new Unauthorized('Invalid or expired signed URL.');
        }
        request.signedAssetId = assetId;
        return;
      }
    }
    request.clientId = await deps.auth.authenticate(request.headers);
  });
}

/** The authenticated client of a request. A handler reached without one refuses: there is no default client. */
export function clientOf(request: FastifyRequest): string {
  if (!request.clientId) throw new Unauthorized(MISSING_KEY);
  return request.clientId;
}

export interface Authenticator {
  /** The client id owning the request's key; throws Unauthorized. */
  authenticate(headers: Record<string, string | string[] | undefined>): Promise<string>;
  /** Writes the pending last-used times (at close). */
  close(): Promise<void>;
}

const digest = (s: string) => createHash('sha256').update(s).digest();
const MISSING_KEY = 'Missing API key: send Authorization: Bearer <API_KEY> or X-Zhinian-Api-Key.';

/** How long a process trusts what it read of a console key: revocation reaches every instance within this (CONTRACT: 5 s). */
const KEY_CACHE_MS = 2000;
/** Cached key rows at most (unknown ids are cached too, so a flood of made-up keys cannot grow it without bound). */
const KEY_CACHE_MAX = 10_000;
/** Last-used times are written this often, in one statement, not per request. */
const LAST_USED_FLUSH_MS = 5000;

interface KeyEntry {
  clientId: string;
  hash: Buffer;
  expiresAt: number | null;
  revokedAt: number | null;
}

/**
 * Two kinds of key. Console keys (`zk_<id>_<secret>`, clients/keys.ts) are found by their id
 * (one indexed row, cached for KEY_CACHE_MS) and compared as SHA-256 digests with
 * timingSafeEqual. Keys from ZHINIAN_API_KEYS (or the data dir's default key) are compared
 * the same way against every configured key without stopping at a match, so response time
 * reveals neither a key's prefix nor its position. A disabled client's keys are all refused.
 */
export function createAuthenticator(opts: { envKeys: ApiKey[]; handle: DbHandle; clients: ClientDirectory; clock: Clock }): Authenticator {
  const known = opts.envKeys.map((k) => ({ clientId: k.clientId, digest: digest(k.key) }));
  /** Env keys' last use, by their hash (their `env_keys` rows), written with the console keys'. */
  const envLastUsed = new Map<string, number>();
  const { db } = opts.handle;
  const cache = new Map<string, { entry: KeyEntry | null; loadedAt: number }>();
  const loading = new Map<string, Promise<KeyEntry | null>>();
  const lastUsed = new Map<string, number>();

  async function loadKey(id: string): Promise<KeyEntry | null> {
    const row = await db.selectFrom('keys').select(['client_id', 'secret_hash', 'expires_at', 'revoked_at']).where('id', '=', id).executeTakeFirst();
    const entry = row
      ? {
          clientId: row.client_id,
          hash: Buffer.from(row.secret_hash, 'hex'),
          expiresAt: row.expires_at === null ? null : Number(row.expires_at),
          revokedAt: row.revoked_at === null ? null : Number(row.revoked_at),
        }
      : null;
    if (cache.size >= KEY_CACHE_MAX) cache.clear();
    cache.set(id, { entry, loadedAt: performance.now() });
    return entry;
  }

  async function keyEntry(id: string): Promise<KeyEntry | null> {
    const cached = cache.get(id);
    if (cached && performance.now() - cached.loadedAt < KEY_CACHE_MS) return cached.entry;
    let pending = loading.get(id);
    if (!pending) {
      pending = loadKey(id).finally(() => loading.delete(id));
      loading.set(id, pending);
    }
    return pending;
  }

  async function flushLastUsed(): Promise<void> {
    await flushEnvLastUsed();
    if (lastUsed.size === 0) return;
    const byTime = new Map<number, string[]>();
    for (const [id, at] of lastUsed) {
      const ids = byTime.get(at);
      if (ids) ids.push(id);
      else byTime.set(at, [id]);
    }
    lastUsed.clear();
    for (const [at, ids] of byTime) await stampKeysUsed(db, ids, at);
  }
  async function flushEnvLastUsed(): Promise<void> {
    const pending = [...envLastUsed];
    envLastUsed.clear();
    for (const [hash, at] of pending) await stampEnvKeyUsed(db, hash, at);
  }
  const flusher = setInterval(() => {
    flushLastUsed().catch(() => {});
  }, LAST_USED_FLUSH_MS);
  flusher.unref();

  async function consoleKeyClient(id: string, candidate: Buffer): Promise<string | null> {
    const entry = await keyEntry(id);
    if (!entry || !timingSafeEqual(candidate, entry.hash)) return null;
    const now = opts.clock.now();
    if (entry.revokedAt !== null) throw new Unauthorized('This API key has been revoked.');
    if (entry.expiresAt !== null && entry.expiresAt <= now) throw new Unauthorized('This API key has expired.');
    // Minute resolution: enough for "last used", and most requests change nothing.
    lastUsed.set(id, Math.floor(now / 60_000) * 60_000);
    return entry.clientId;
  }

  return {
    async authenticate(headers) {
      const presented = presentedKey(headers);
      if (presented === null) throw new Unauthorized(MISSING_KEY);
      const candidate = digest(presented);
      const id = keyIdOf(presented);
      let clientId = id === null ? null : await consoleKeyClient(id, candidate);
      if (clientId === null) {
        let match: (typeof known)[number] | null = null;
        for (const k of known) {
          if (timingSafeEqual(candidate, k.digest) && match === null) match = k;
        }
        if (match) {
          clientId = match.clientId;
          envLastUsed.set(candidate.toString('hex'), Math.floor(opts.clock.now() / 60_000) * 60_000);
        }
      }
      if (clientId === null) throw new Unauthorized('Invalid API key.');
      if ((await opts.clients.settingsOf(clientId)).disabled) throw new Unauthorized('This client is disabled.');
      return clientId;
    },
    async close() {
      clearInterval(flusher);
      await flushLastUsed();
    },
  };
}

function presentedKey(headers: Record<string, string | string[] | undefined>): string | null {
  const auth = headers.authorization;
  if (typeof auth === 'string' && auth.trim() !== '') {
    const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
    if (!m) throw new Unauthorized('Authorization header must be "Bearer <API_KEY>".');
    return m[1].trim();
  }
  const header = headers['x-zhinian-api-key'];
  if (typeof header === 'string' && header.trim() !== '') return header.trim();
  return null;
}

/**
 * With no ZHINIAN_API_KEYS, one key for client `default` is made on first start and kept in
 * the data dir, so restarts (and separate worker processes) agree on it.
 */
export function loadOrCreateDefaultKey(dataDir: string): { key: ApiKey; created: boolean } {
  const { value, created } = readOrCreateSecret(path.join(dataDir, 'api-key'), () => `zk_${randomBytes(24).toString('base64url')}`);
  return { key: { clientId: 'default', key: value }, created };
}
