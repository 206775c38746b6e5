import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import path from 'node:path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { UrlSigner } from '../assets/index.ts';
import type { ApiKey } from '../config/index.ts';
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
    request.clientId = deps.auth.authenticate(request.headers);
  });
}

/** The authenticated client of a request. A handler reached without one refuses: there is no default client. */
export function clientOf(request: FastifyRequest): string {
  if (!request.clientId) throw new Unauthorized('Missing API key: send Authorization: Bearer <API_KEY> or X-Zhinian-Api-Key.');
  return request.clientId;
}

export interface Authenticator {
  /** The client id owning the request's key; throws Unauthorized. */
  authenticate(headers: Record<string, string | string[] | undefined>): string;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Keys are compared as SHA-256 digests with timingSafeEqual, against every configured key
 * without stopping at a match, so response time reveals neither a key's prefix nor its position.
 */
export function createAuthenticator(keys: ApiKey[]): Authenticator {
  const known = keys.map((k) => ({ clientId: k.clientId, digest: digest(k.key) }));
  return {
    authenticate(headers) {
      const presented = presentedKey(headers);
      if (presented === null) throw new Unauthorized('Missing API key: send Authorization: Bearer <API_KEY> or X-Zhinian-Api-Key.');
      const candidate = digest(presented);
      let clientId: string | null = null;
      for (const k of known) {
        if (timingSafeEqual(candidate, k.digest) && clientId === null) clientId = k.clientId;
      }
      if (clientId === null) throw new Unauthorized('Invalid API key.');
      return clientId;
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
