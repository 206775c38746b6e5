import { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';

/** Probes hit these every few seconds; logging them would drown everything else. */
const UNLOGGED = new Set(['/healthz', '/readyz']);

/**
 * One line per request, when its answer is done (Fastify's default is two): what ran (the
 * route pattern, never the raw URL, which may carry a signed link's signature), for whom, how
 * it ended and how long it took. Health checks are not logged.
 */
export class RequestLog extends LogController {
  override isLogDisabled(request: FastifyRequest): boolean {
    const route = request.routeOptions.url;
    return route !== undefined && UNLOGGED.has(route);
  }

  override incomingRequest(): void {}

  override routeNotFound(): void {}

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (this.isLogDisabled(request)) return;
    const line = { ...describe(request), statusCode: reply.statusCode, durationMs: Math.round(reply.elapsedTime * 10) / 10 };
    if (error) request.log.error({ ...line, err: error }, 'request');
    else request.log.info(line, 'request');
  }
}

/**
 * A request whose client hung up gets no answer, so no completed line: it gets this one instead,
 * at info (nothing failed on our side). Past the shutdown grace period we are the ones cutting
 * connections (a stalled upload): the line says so, not that the client went away.
 */
export function registerAbortLog(app: FastifyInstance): void {
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequestAbort', async (request) => {
    request.log.info(describe(request), closing ? 'request cut off by shutdown' : 'request aborted by the client');
  });
}

function describe(request: FastifyRequest) {
  return { method: request.method, route: request.routeOptions.url ?? null, clientId: request.clientId };
}
