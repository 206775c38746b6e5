import multipart from '@fastify/multipart';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { AssetService, Store, UrlSigner } from '../assets/index.ts';
import type { Db } from '../db/index.ts';
import type { EngineRegistry } from '../engines/registry.ts';
import type { JobService } from '../jobs/index.ts';
import type { Authenticator } from './auth.ts';
import { Unauthorized } from '../lib/errors.ts';
import { registerErrorHandling } from './errors.ts';
import { registerAssetRoutes } from './routes/assets.ts';
import { registerJobRoutes } from './routes/jobs.ts';
import { registerMetaRoutes } from './routes/meta.ts';

declare module 'fastify' {
  interface FastifyRequest {
    clientId: string;
    /** The asset a valid signed download link opens (no API key needed for that one URL). */
    signedAssetId: string | null;
  }
}

export interface AppDeps {
  logger: Logger;
  auth: Authenticator;
  signer: UrlSigner;
  jobs: JobService;
  assets: AssetService;
  store: Store;
  db: Db;
  engines: EngineRegistry;
  maxUploadBytes: number;
  baseUrl: () => string;
}

const PUBLIC_PATHS = new Set(['/api/v1/openapi.json', '/healthz', '/readyz']);
const SIGNED_DOWNLOAD = /^\/api\/v1\/assets\/(asset_[0-9a-z]{26})\/download$/;
/** JSON bodies are small (a prompt, some URLs, ≤ 4 KiB metadata); files go through multipart. */
const JSON_BODY_LIMIT = 1024 * 1024;

/** Builds the HTTP app. It never listens: `cli/` does. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: JSON_BODY_LIMIT,
    return503OnClosing: true,
    requestIdHeader: 'x-request-id',
    routerOptions: { ignoreTrailingSlash: true },
  });
  app.decorateRequest('clientId', '');
  app.decorateRequest('signedAssetId', null);
  // Bodies are JSON or multipart; anything else is refused (415, answered as 400).
  app.removeContentTypeParser('text/plain');
  registerErrorHandling(app);
  await app.register(multipart, {
    limits: { fileSize: deps.maxUploadBytes, files: 20, fields: 20, parts: 40 },
  });

  app.addHook('onRequest', async (request) => {
    const path = request.url.split('?', 1)[0];
    if (PUBLIC_PATHS.has(path) || !path.startsWith('/api/')) return;
    const signed = SIGNED_DOWNLOAD.exec(path);
    const query = request.query as Record<string, string | undefined>;
    if (signed && (query.signature !== undefined || query.expires !== undefined)) {
      if (!deps.signer.verify(signed[1], query.expires, query.signature)) throw new Unauthorized('Invalid or expired signed URL.');
      request.signedAssetId = signed[1];
      return;
    }
    request.clientId = deps.auth.authenticate(request.headers);
  });

  registerMetaRoutes(app, { db: deps.db, store: deps.store, engines: deps.engines, baseUrl: deps.baseUrl });
  registerJobRoutes(app, deps.jobs);
  registerAssetRoutes(app, deps.assets, deps.store);
  return app;
}
