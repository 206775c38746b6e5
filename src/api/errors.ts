import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ERR, ERROR_CODES, httpStatus, type ApiErrorCode, type CodeEntry } from '../lib/error-codes.ts';
import { AppError, Invalid, RateLimited } from '../lib/errors.ts';

/** The one place that turns errors into HTTP answers: `{ error, code }`, never a stack or the request's URL. */
function statusFor(error: AppError): number {
  // The catalogue's status for the code; a code without one (an internal FetchError's) is the caller's input.
  const entry: CodeEntry = ERROR_CODES[error.code];
  return entry.http ?? 400;
}

/** An API error answer: the catalogue's status for `code`, and `{ error, code }`. */
export function sendError(reply: FastifyReply, code: ApiErrorCode, message: string) {
  return reply.status(httpStatus(code)).send({ error: message, code });
}

/** Fastify's own 4xx errors, in our words (its messages may quote the URL or internals). */
const FRAMEWORK_ERRORS: Record<string, [code: ApiErrorCode, message: string]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: [ERR.too_large, 'Request body is too large.'],
  FST_ERR_CTP_INVALID_JSON_BODY: [ERR.invalid_request, 'Request body is not valid JSON.'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [ERR.invalid_request, 'Request body is empty; send a JSON object.'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [ERR.invalid_request, 'Content-Length does not match the body.'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [ERR.invalid_request, 'Unsupported Content-Type: send application/json (or multipart/form-data to upload files).'],
  FST_ERR_CTP_INVALID_TYPE: [ERR.invalid_request, 'Unsupported Content-Type: send application/json (or multipart/form-data to upload files).'],
  FST_ERR_BAD_URL: [ERR.invalid_request, 'The request path is not a valid URL (bad percent-encoding).'],
  FST_ERR_MAX_PARAM_LENGTH: [ERR.uri_too_long, 'A path segment is too long.'],
};

/** Errors that mean the client went away mid-request: nothing to answer, nothing to alarm anyone about. */
const CLIENT_GONE = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE']);

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError | AppError | Error, request, reply) => {
    if (error instanceof AppError) {
      if (error instanceof RateLimited) reply.header('retry-after', String(error.retryAfterSeconds));
      // Bad input also names its field on its own for the console, which shows it next to the form
      // (on /api/v1 the message names it: the seed's error body stays `{ error, code }`).
      if (error instanceof Invalid && error.field && request.routeOptions.config?.access?.startsWith('console'))
        return reply.status(statusFor(error)).send({ error: error.message, code: error.code, field: error.field });
      return reply.status(statusFor(error)).send({ error: error.message, code: error.code });
    }
    const code = (error as FastifyError).code;
    // The hang-up itself is logged once, by the abort hook (request-log.ts).
    if (code !== undefined && CLIENT_GONE.has(code) && request.raw.destroyed) {
      return sendError(reply, ERR.request_aborted, 'The request was aborted.');
    }
    if (code !== undefined && code in FRAMEWORK_ERRORS) return sendFrameworkError(code, reply);
    const status = (error as FastifyError).statusCode;
    if (status !== undefined && status >= 400 && status < 500) {
      if (error instanceof SyntaxError) return sendError(reply, ERR.invalid_request, 'Request body is not valid JSON.');
      request.log.warn({ err: error }, 'unmapped client error');
      return sendError(reply, ERR.invalid_request, 'The request is not valid.');
    }
    request.log.error({ err: error }, 'request failed');
    return sendError(reply, ERR.internal_error, 'Internal server error.');
  });
  app.setNotFoundHandler((request, reply) => {
    sendError(reply, ERR.not_found, `No such route (${request.method}).`);
  });
}

function sendFrameworkError(code: string, reply: FastifyReply) {
  const [ourCode, message] = FRAMEWORK_ERRORS[code]!;
  return sendError(reply, ourCode, message);
}

/**
 * Headers on every answer: its request id (for support) and no content sniffing (downloads are
 * partners' files: a browser must not run one as HTML).
 */
export function stampReply(request: FastifyRequest, reply: FastifyReply): void {
  reply.header('x-request-id', request.id).header('x-content-type-options', 'nosniff');
}

/**
 * Headers that a part mounted on the app (the console, under /admin) puts on an answer refused
 * before routing, chosen by the raw URL: such an answer runs none of that part's hooks.
 */
export type PreRoutingHeaders = (rawUrl: string | undefined, reply: FastifyReply) => void;

/** Fastify's `frameworkErrors`: errors found while routing (bad percent-encoding, an over-long path parameter). */
export function frameworkErrorHandler(preRoutingHeaders: PreRoutingHeaders) {
  return (error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    stampReply(request, reply);
    preRoutingHeaders(request.raw.url, reply);
    if (error.code in FRAMEWORK_ERRORS) return sendFrameworkError(error.code, reply);
    return sendError(reply, ERR.invalid_request, 'The request is not valid.');
  };
}

/**
 * Node's `clientError`: requests the HTTP parser refused (unknown method, bad framing, headers
 * too large) and Node's request timeout. Answered in our `{ error, code }` shape, then closed.
 */
export function clientErrorHandler(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [code, message]: [ApiErrorCode, string] =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [ERR.request_timeout, 'The request did not arrive in time (ZHINIAN_REQUEST_TIMEOUT_SECONDS).']
      : error.code === 'HPE_HEADER_OVERFLOW'
        ? [ERR.headers_too_large, 'The request line and headers are too large.']
        : [ERR.invalid_request, 'The request is not valid HTTP/1.1.'];
  const status = httpStatus(code);
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
