import type { ClientDirectory } from '../clients/index.ts';
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { AssetService, Store, UrlSigner } from '../assets/index.ts';
import type { Db } from '../db/index.ts';
import type { EngineRegistry } from '../engines/registry.ts';
import type { JobService } from '../jobs/index.ts';
import type { JobDeliveries } from '../webhooks/index.ts';
import type { LiveStatus } from '../live/index.ts';
import { systemClock, type Clock } from '../lib/clock.ts';
import { ERR } from '../lib/error-codes.ts';
import { registerAccessControl, type Authenticator } from './auth.ts';
import { clientErrorHandler, frameworkErrorHandler, registerErrorHandling, sendError, stampReply, type PreRoutingHeaders } from './errors.ts';
import { registerJsonParser } from './json-body.ts';
import { registerLingeringClose } from './lingering-close.ts';
import { registerMultipartPassThrough } from './multipart.ts';
import { rejectUnstorableParams } from './param-guard.ts';
import { registerAbortLog, RequestLog } from './request-log.ts';
import { registerRequestLimit } from './request-limit.ts';
import { registerAssetRoutes } from './routes/assets.ts';
import { registerDeliveryRoutes } from './routes/deliveries.ts';
import { registerJobEventRoutes } from './routes/job-events.ts';
import { registerJobRoutes } from './routes/jobs.ts';
import { registerMetaRoutes } from './routes/meta.ts';

export interface AppDeps {
  logger: Logger;
  auth: Authenticator;
  signer: UrlSigner;
  jobs: JobService;
  /** Jobs' webhook deliveries: list, redeliver. */
  deliveries: JobDeliveries;
  /** Job change notices for event streams and `Prefer: wait`. */
  live: LiveStatus;
  assets: AssetService;
  store: Store;
  db: Db;
  engines: EngineRegistry;
  /** Per-client limits (request rate limit). */
  clients: ClientDirectory;
  /** The request rate limit's time (default: the system clock). */
  clock?: Clock;
  /** A request whose headers and body have not fully arrived by then is answered 408. */
  requestTimeoutMs: number;
  baseUrl: () => string;
  /** Headers of the parts registered on the app later (the console's), for answers refused before routing. */
  preRoutingHeaders?: PreRoutingHeaders;
}

/** JSON bodies are small (a prompt, some URLs, ≤ 4 KiB metadata); files go through multipart. */
const JSON_BODY_LIMIT = 1024 * 1024;
/** A client's X-Request-Id is kept only when it is this short and printable (it goes into every log line). */
const CLIENT_REQUEST_ID = /^[\x21-\x7e]{1,64}$/;
/** Headers must arrive within this (or the request timeout, if shorter); the body gets the rest. */
const HEADERS_TIMEOUT_MS = 30_000;

/**
 * Builds the HTTP app: its hooks, error handling and the `/api/v1` routes. It never listens:
 * `cli/` does, after registering the console (console/index.ts) on it. The hooks declared here
 * run for the console's routes too, since they are added before it.
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: JSON_BODY_LIMIT,
    // Answered by our own hook below, in the { error, code } shape.
    return503OnClosing: false,
    logController: new RequestLog(),
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && CLIENT_REQUEST_ID.test(given) ? given : randomUUID();
    },
    routerOptions: { ignoreTrailingSlash: true },
    // Node's own timers: a stalled upload or a slow-loris client is answered 408 and closed.
    // The check runs every second so the limit holds to about a second (Node's default is 30 s).
    requestTimeout: deps.requestTimeoutMs,
    http: {
      headersTimeout: Math.min(HEADERS_TIMEOUT_MS, deps.requestTimeoutMs),
      connectionsCheckingInterval: Math.min(1000, deps.requestTimeoutMs),
    },
    clientErrorHandler,
    frameworkErrors: frameworkErrorHandler(deps.preRoutingHeaders ?? (() => {})),
  });
  // Bodies are JSON or multipart; anything else is refused (415, answered as 400).
  app.removeContentTypeParser('text/plain');
  registerJsonParser(app);
  registerErrorHandling(app);
  registerAbortLog(app);
  registerLingeringClose(app);
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (request, reply) => {
    stampReply(request, reply);
    // A request on a kept-alive connection while we shut down: the load balancer should retry it elsewhere.
    if (closing) return sendError(reply, ERR.shutting_down, 'The server is shutting down; try again.');
    rejectUnstorableParams(request);
  });
  registerAccessControl(app, { auth: deps.auth, signer: deps.signer });
  // Before the routes: it adds its hook to each route as it is declared.
  await registerRequestLimit(app, { db: deps.db, clients: deps.clients, clock: deps.clock ?? systemClock });
  registerMultipartPassThrough(app);

  registerMetaRoutes(app, { db: deps.db, store: deps.store, engines: deps.engines, baseUrl: deps.baseUrl });
  registerJobRoutes(app, deps.jobs, deps.live);
  registerJobEventRoutes(app, deps.jobs, deps.live);
  registerDeliveryRoutes(app, deps.deliveries);
  registerAssetRoutes(app, deps.assets, deps.store);
  return app;
}
