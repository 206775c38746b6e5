import fastifyCookie from '@fastify/cookie';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { sendError } from '../api/errors.ts';
import { ERR } from '../lib/error-codes.ts';
import { registerConsoleApi } from './api/index.ts';
import { registerAuthRoutes } from './auth-routes.ts';
import { consoleSecurityHeaders } from './headers.ts';
import type { ConsoleDeps } from './deps.ts';
import { registerPages } from './pages.ts';
import { type ConsoleSession, CONSOLE_PATH, csrfMatches } from './session.ts';
import { registerStatic } from './static.ts';

export type { ConsoleDeps } from './deps.ts';
export { consolePreRoutingHeaders } from './headers.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The console session of a request under /admin; null without one. */
    consoleSession: ConsoleSession | null;
  }
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * The browser console under /admin, in its own plugin context: its cookie parser and session
 * guard never run for `/api/v1`. Routes say who may reach them (`config.access`):
 *  - `console` (the default here): a signed-in user; a change (any method but GET/HEAD) also
 *    needs the `admin` role and `X-CSRF-Token` equal to the session's token.
 *  - `console-public`: anyone (sign-in routes, static files); the session is still loaded.
 * API keys play no part: a key never opens /admin, a session never opens /api/v1.
 */
export async function registerConsole(app: FastifyInstance, deps: ConsoleDeps): Promise<void> {
  app.decorateRequest('consoleSession', null);
  await app.register(
    async (admin) => {
      await admin.register(fastifyCookie, { secret: deps.sessionSecret });
      // The one-time link's sign-in form is the only form post; everything else sends JSON.
      admin.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 4096 }, (_request, body, done) => {
        done(null, Object.fromEntries(new URLSearchParams(body as string)));
      });
      admin.addHook('onRoute', (route) => {
        route.config = { access: 'console', ...route.config };
      });
      admin.addHook('onRequest', async (request, reply) => {
        consoleSecurityHeaders(reply);
        if (request.is404) return;
        const access = request.routeOptions.config.access;
        if (deps.sessions.cookieCount(request) > 1) {
          // Cookie tossing (a sibling subdomain planting its own): which one counts must not depend on order.
          deps.sessions.clearCookies(reply);
          return sendError(reply, ERR.invalid_request, 'Two console session cookies were sent; both were cleared. Sign in again.');
        }
        request.consoleSession = await deps.sessions.load(request);
        if (access === 'console-public') return;
        reply.header('cache-control', 'no-store');
        return guard(request, reply);
      });
      // A path under /admin that no route has: the console's 404, after the hook above set its headers.
      admin.setNotFoundHandler((request, reply) => sendError(reply, ERR.not_found, `No such route (${request.method}).`));
      registerStatic(admin);
      registerAuthRoutes(admin, deps);
      registerConsoleApi(admin, deps);
      registerPages(admin, deps);
    },
    { prefix: CONSOLE_PATH },
  );
}

async function guard(request: FastifyRequest, reply: FastifyReply) {
  const session = request.consoleSession;
  // The route that will run decides, not the URL as spelled.
  const isApi = request.routeOptions.url?.startsWith(`${CONSOLE_PATH}/api/`) === true;
  if (!session) {
    if (SAFE_METHODS.has(request.method) && !isApi) return reply.redirect(`${CONSOLE_PATH}/auth/login`, 302);
    return sendError(reply, ERR.unauthorized, 'Sign in to the console first.');
  }
  if (SAFE_METHODS.has(request.method)) return;
  if (session.user.role !== 'admin') return sendError(reply, ERR.forbidden, 'Your role (viewer) cannot change anything.');
  if (!csrfMatches(request.headers['x-csrf-token'], session.csrfToken)) {
    return sendError(reply, ERR.forbidden, 'Missing or wrong X-CSRF-Token (GET /admin/api/me gives it).');
  }
}
