import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, Invalid, NotFound, RateLimited, TooLarge, Unauthorized, Conflict } from '../lib/errors.ts';

/** The one place that turns errors into HTTP answers: `{ error, code }`, never a stack or the request's URL. */
function statusFor(error: AppError): number {
  if (error instanceof Invalid) return 400;
  if (error instanceof Unauthorized) return 401;
  if (error instanceof NotFound) return 404;
  if (error instanceof Conflict) return 409;
  if (error instanceof TooLarge) return 413;
  if (error instanceof RateLimited) return 429;
  // Other domain errors (a refused URL, say) are the caller's input.
  return 400;
}

/** Fastify's and @fastify/multipart's own 4xx errors, in our words (their messages may quote the URL or internals). */
const FRAMEWORK_ERRORS: Record<string, [status: number, code: string, message: string]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: [413, 'too_large', 'Request body is too large.'],
  FST_REQ_FILE_TOO_LARGE: [413, 'too_large', 'An uploaded file is larger than the upload limit.'],
  FST_ERR_CTP_INVALID_JSON_BODY: [400, 'invalid_request', 'Request body is not valid JSON.'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'invalid_request', 'Request body is empty; send a JSON object.'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, 'invalid_request', 'Content-Length does not match the body.'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [400, 'invalid_request', 'Unsupported Content-Type: send application/json (or multipart/form-data to upload files).'],
  FST_ERR_CTP_INVALID_TYPE: [400, 'invalid_request', 'Unsupported Content-Type: send application/json (or multipart/form-data to upload files).'],
  FST_ERR_BAD_URL: [400, 'invalid_request', 'The request path is not a valid URL (bad percent-encoding).'],
  FST_ERR_MAX_PARAM_LENGTH: [414, 'uri_too_long', 'A path segment is too long.'],
  FST_INVALID_MULTIPART_CONTENT_TYPE: [400, 'invalid_request', 'Content-Type must be multipart/form-data with a boundary.'],
  FST_PARTS_LIMIT: [400, 'invalid_request', 'The form has too many parts.'],
  FST_FIELDS_LIMIT: [400, 'invalid_request', 'The form has too many fields.'],
  FST_PROTO_VIOLATION: [400, 'invalid_request', 'A form field name is not allowed.'],
};

/** Errors that mean the client went away mid-request: nothing to answer, nothing to alarm anyone about. */
const CLIENT_GONE = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE']);

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError | AppError | Error, request, reply) => {
    if (error instanceof AppError) {
      if (error instanceof RateLimited) reply.header('retry-after', String(error.retryAfterSeconds));
      return reply.status(statusFor(error)).send({ error: error.message, code: error.code });
    }
    const code = (error as FastifyError).code;
    // The hang-up itself is logged once, by the abort hook (request-log.ts).
    if (code !== undefined && CLIENT_GONE.has(code) && request.raw.destroyed) {
      return reply.status(400).send({ error: 'The request was aborted.', code: 'request_aborted' });
    }
    if (code !== undefined && code in FRAMEWORK_ERRORS) return sendFrameworkError(code, reply);
    const status = (error as FastifyError).statusCode;
    if (status !== undefined && status >= 400 && status < 500) {
      if (error instanceof SyntaxError) return reply.status(400).send({ error: 'Request body is not valid JSON.', code: 'invalid_request' });
      request.log.warn({ err: error }, 'unmapped client error');
      return reply.status(400).send({ error: 'The request is not valid.', code: 'invalid_request' });
    }
    request.log.error({ err: error }, 'request failed');
    return reply.status(500).send({ error: 'Internal server error.', code: 'internal_error' });
  });
  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send({ error: `No such route (${request.method}).`, code: 'not_found' });
  });
}

function sendFrameworkError(code: string, reply: FastifyReply) {
  const [status, ourCode, message] = FRAMEWORK_ERRORS[code]!;
  return reply.status(status).send({ error: message, code: ourCode });
}

/**
 * Headers on every answer: its request id (for support) and no content sniffing (downloads are
 * partners' files: a browser must not run one as HTML).
 */
export function stampReply(request: FastifyRequest, reply: FastifyReply): void {
  reply.header('x-request-id', request.id).header('x-content-type-options', 'nosniff');
}

/** Fastify's `frameworkErrors`: errors found while routing (bad percent-encoding, an over-long path parameter). */
export function frameworkErrorHandler(error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  stampReply(request, reply);
  if (error.code in FRAMEWORK_ERRORS) return sendFrameworkError(error.code, reply);
  return reply.status(400).send({ error: 'The request is not valid.', code: 'invalid_request' });
}

/**
 * Node's `clientError`: requests the HTTP parser refused (unknown method, bad framing, headers
 * too large) and Node's request timeout. Answered in our `{ error, code }` shape, then closed.
 */
export function clientErrorHandler(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, message] =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'request_timeout', 'The request did not arrive in time (ZHINIAN_REQUEST_TIMEOUT_SECONDS).']
      : error.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'headers_too_large', 'The request line and headers are too large.']
        : [400, 'invalid_request', 'The request is not valid HTTP/1.1.'];
  const body = JSON.stringify({ error: message, code });
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `X-Request-Id: ${randomUUID()}\r\nX-Content-Type-Options: nosniff\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  // end, not destroy: the answer must reach the client before the connection closes.
  socket.end();
  socket.setTimeout(5_000, () => socket.destroy());
}
