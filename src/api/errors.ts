import type { FastifyError, FastifyInstance } from 'fastify';
import { AppError, Invalid, NotFound, RateLimited, TooLarge, Unauthorized, Conflict } from '../lib/errors.ts';

/** The one place that turns errors into HTTP answers: `{ error, code }`, never a stack. */
export function statusFor(error: AppError): number {
  if (error instanceof Invalid) return 400;
  if (error instanceof Unauthorized) return 401;
  if (error instanceof NotFound) return 404;
  if (error instanceof Conflict) return 409;
  if (error instanceof TooLarge) return 413;
  if (error instanceof RateLimited) return 429;
  // Other domain errors (a refused URL, say) are the caller's input.
  return 400;
}

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError | AppError | Error, request, reply) => {
    if (error instanceof AppError) {
      if (error instanceof RateLimited) reply.header('retry-after', String(error.retryAfterSeconds));
      return reply.status(statusFor(error)).send({ error: error.message, code: error.code });
    }
    const status = (error as FastifyError).statusCode;
    if (status === 413 || (error as FastifyError).code === 'FST_REQ_FILE_TOO_LARGE') {
      return reply.status(413).send({ error: 'Request body is too large.', code: 'too_large' });
    }
    if (status === 415) {
      return reply.status(400).send({ error: `Unsupported Content-Type "${request.headers['content-type'] ?? ''}": send application/json.`, code: 'invalid_request' });
    }
    if (status !== undefined && status >= 400 && status < 500) {
      return reply.status(400).send({ error: cleanMessage(error), code: 'invalid_request' });
    }
    request.log.error({ err: error }, 'request failed');
    return reply.status(500).send({ error: 'Internal server error.', code: 'internal_error' });
  });
  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send({ error: `No route ${request.method} ${request.url.split('?')[0]}.`, code: 'not_found' });
  });
}

function cleanMessage(error: Error): string {
  if ((error as FastifyError).code === 'FST_ERR_CTP_INVALID_JSON_BODY' || error instanceof SyntaxError) return 'Request body is not valid JSON.';
  if ((error as FastifyError).code === 'FST_ERR_CTP_EMPTY_JSON_BODY') return 'Request body is empty; send a JSON object.';
  return error.message;
}
