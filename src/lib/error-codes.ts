/**
 * The one catalogue of error codes (after fastify `lib/errors.js`, supabase/storage
 * `src/internal/errors/codes.ts`): every `code` this service produces, in an API answer's
 * `{ error, code }` or a job's `error: { code, message }`, with its HTTP status (API errors) and
 * whether the platform runs the job again (job errors). The classes in `lib/errors.ts`,
 * `EngineError`, `FetchError`, `api/errors.ts`, the OpenAPI document and the README's table are
 * derived from it. Code refers to a code as `ERR.<code>`, never as a string written by hand;
 * `test/error-codes.test.ts` holds the sources and the README to that.
 */

export interface CodeEntry {
  /**
   * `api`: in an HTTP answer; `job`: in a job's `error`; `both`; `internal`: classifies a failure
   * inside the service and is turned into another code before any client sees it.
   */
  kind: 'api' | 'job' | 'both' | 'internal';
  /** The HTTP status of an API error. */
  http?: number;
  /**
   * Job errors: whether the platform runs the job again (another attempt, up to
   * ZHINIAN_MAX_ATTEMPTS) rather than ending it, so a job ends with a retried code only once its
   * runs are used up. `sometimes`: the place that raises it decides (transient trouble is retried,
   * a definite refusal is not); it is not retried unless that place says so.
   */
  retryable?: boolean | 'sometimes';
  /** One line, for the docs. */
  description: string;
}

export const ERROR_CODES = {
  // API answers.
  invalid_request: {
    kind: 'api',
    http: 400,
    description: 'Bad JSON or field (the message names it), unknown field or query parameter, unsupported content type, malformed multipart, bad percent-encoding, a refused URL.',
  },
  request_aborted: { kind: 'api', http: 400, description: 'The client hung up mid-request (the answer is not expected to arrive).' },
  unauthorized: { kind: 'api', http: 401, description: 'API key missing or wrong; a bad or expired signed link.' },
  forbidden: {
    kind: 'api',
    http: 403,
    description:
      'Console: a change without the `X-CSRF-Token` of the session, a change by a `viewer`, or a signed-in user with no role. API: the client may not use that engine (its allowed engines).',
  },
  not_found: { kind: 'api', http: 404, description: "No such job, asset or route, or another client's." },
  request_timeout: { kind: 'api', http: 408, description: 'The request did not fully arrive within `ZHINIAN_REQUEST_TIMEOUT_SECONDS` (the connection is then closed).' },
  conflict: { kind: 'api', http: 409, description: 'The job changed while being cancelled; try again.' },
  idempotency_conflict: { kind: 'api', http: 409, description: 'The `Idempotency-Key` was already used with another body.' },
  job_terminal: { kind: 'api', http: 409, description: 'Cancel of a job that has already finished.' },
  too_large: { kind: 'api', http: 413, description: 'A JSON body over 1 MiB, a file over `ZHINIAN_MAX_UPLOAD_BYTES`, an image over `ZHINIAN_MAX_INPUT_PIXELS`.' },
  uri_too_long: { kind: 'api', http: 414, description: 'An over-long path segment (an id).' },
  range_not_satisfiable: { kind: 'api', http: 416, description: 'A valid Range that starts past the end of the file.' },
  rate_limited: {
    kind: 'both',
    http: 429,
    retryable: false,
    description:
      "API: over the client's request limit (`ZHINIAN_RATE_LIMIT_REQUESTS_PER_MINUTE`) or job-creation limit (`ZHINIAN_RATE_LIMIT_JOBS_PER_MINUTE`), or at 100 open event streams on one server; `Retry-After` gives the seconds to wait, `RateLimit-Limit` the limit. Job: the provider was still rate-limiting when the job's time ran out (rate limits are waited out without using an attempt).",
  },
  headers_too_large: { kind: 'api', http: 431, description: 'The request line and headers are too large.' },
  internal_error: { kind: 'both', http: 500, retryable: false, description: 'An unexpected fault in the server or the worker (details only in its log, with the request id).' },
  shutting_down: { kind: 'api', http: 503, description: 'The server is shutting down; a request still arriving on an open connection should be sent again.' },
  query_timeout: {
    kind: 'api',
    http: 503,
    description: 'Console: a query ran past its time limit (10 s, waiting included) and was stopped, or too many were waiting; narrow the filter or try again.',
  },

  // Job errors.
  invalid_input: {
    kind: 'job',
    retryable: false,
    description: "The request breaks an engine's or provider's limit, an input cannot be decoded, or an input asset no longer exists.",
  },
  input_fetch_failed: {
    kind: 'job',
    retryable: 'sometimes',
    description: 'An input URL could not be fetched (retried when the trouble may pass: connection errors, timeouts, 5xx).',
  },
  input_too_large: {
    kind: 'job',
    retryable: false,
    description: 'An input is larger than `ZHINIAN_MAX_UPLOAD_BYTES`, or an image has more pixels than `ZHINIAN_MAX_INPUT_PIXELS`.',
  },
  content_moderation: { kind: 'job', retryable: false, description: "The provider's moderation refused the input or the result." },
  quota_exceeded: { kind: 'job', retryable: false, description: 'The provider account is out of credit or quota.' },
  provider_auth: { kind: 'job', retryable: false, description: 'The provider refused our credentials, or the model is not open to the account.' },
  provider_error: { kind: 'job', retryable: 'sometimes', description: 'The provider failed otherwise (retried when transient: 5xx, 408, connection errors).' },
  provider_timeout: { kind: 'job', retryable: 'sometimes', description: 'The provider did not answer in time (retried), or let the task expire (the job is then expired).' },
  provider_task_lost: { kind: 'job', retryable: false, description: 'The provider no longer knows the task, or a worker stopped while submitting it (failed or expired).' },
  output_unavailable: { kind: 'job', retryable: false, description: 'A result could not be downloaded from the provider.' },
  output_too_large: { kind: 'job', retryable: false, description: "A provider's result image has more pixels than `ZHINIAN_MAX_INPUT_PIXELS`." },
  engine_unavailable: { kind: 'job', retryable: false, description: "The job's engine is not configured on the worker that took it." },
  unsupported: { kind: 'job', retryable: false, description: 'The engine cannot run the capability.' },
  worker_lost: { kind: 'job', retryable: true, description: 'Its workers stopped `ZHINIAN_MAX_ATTEMPTS` times before finishing it (each time another worker took it over).' },
  queue_ttl_exceeded: { kind: 'job', retryable: false, description: 'Queued longer than `ZHINIAN_QUEUE_TTL_SECONDS` (the job is expired).' },
  job_timeout: { kind: 'job', retryable: false, description: 'Running longer than `ZHINIAN_JOB_TIMEOUT_SECONDS` (the job is expired).' },

  // Internal: FetchError codes, turned into invalid_request or too_large (API) and input_fetch_failed,
  // input_too_large or output_unavailable (jobs). `too_large` is shared with the API.
  url_invalid: { kind: 'internal', description: 'A URL that is not an absolute http(s) URL without credentials, or too long.' },
  url_forbidden: { kind: 'internal', description: 'A URL whose host or address is not public.' },
  fetch_failed: { kind: 'internal', description: 'A URL could not be resolved or connected to, or sent a redirect without a Location.' },
  http_status: { kind: 'internal', description: 'A URL answered with a non-2xx status.' },
  too_many_redirects: { kind: 'internal', description: 'A URL redirected too many times.' },
  timeout: { kind: 'internal', description: 'A URL did not finish within the time allowed.' },
} as const satisfies Record<string, CodeEntry>;

export type ErrorCode = keyof typeof ERROR_CODES;
type KindOf<C extends ErrorCode> = (typeof ERROR_CODES)[C]['kind'];
type CodesOf<K extends CodeEntry['kind']> = { [C in ErrorCode]: KindOf<C> extends K ? C : never }[ErrorCode];
/** Codes an HTTP answer may carry. */
export type ApiErrorCode = CodesOf<'api' | 'both'>;
/** Codes a job's `error.code` may carry. */
export type JobErrorCode = CodesOf<'job' | 'both'>;
/** Codes of `FetchError` (net/fetch-url.ts). */
export type FetchErrorCode = CodesOf<'internal'> | typeof ERR.too_large;

/** Every code by name: `ERR.provider_error` is `'provider_error'`, and a typo is a type error. */
export const ERR = Object.fromEntries(Object.keys(ERROR_CODES).map((code) => [code, code])) as { readonly [C in ErrorCode]: C };

const ALL = Object.keys(ERROR_CODES) as ErrorCode[];
export const API_ERROR_CODES = ALL.filter((c): c is ApiErrorCode => ERROR_CODES[c].kind === 'api' || ERROR_CODES[c].kind === 'both');
export const JOB_ERROR_CODES = ALL.filter((c): c is JobErrorCode => ERROR_CODES[c].kind === 'job' || ERROR_CODES[c].kind === 'both');

/** The HTTP status an API error code is answered with. */
export function httpStatus(code: ApiErrorCode): number {
  return ERROR_CODES[code].http;
}

/** The catalogue's answer for an `EngineError` that does not say: only codes always retried are (none is `sometimes`). */
export function retriedByDefault(code: JobErrorCode): boolean {
  return ERROR_CODES[code].retryable === true;
}

/** The README's (and docs/api.md's) table of codes, between `<!-- error-codes:start -->` and `<!-- error-codes:end -->`. */
export function renderErrorTable(): string {
  const retried = (r: boolean | 'sometimes') => (r === 'sometimes' ? 'when transient' : r ? 'yes' : 'no');
  const rows = ALL.filter((c) => ERROR_CODES[c].kind !== 'internal').map((c) => {
    const e: CodeEntry = ERROR_CODES[c];
    const where = e.kind === 'job' ? 'job' : e.kind === 'both' ? `${e.http} / job` : String(e.http);
    return `| \`${c}\` | ${where} | ${e.retryable === undefined ? '—' : retried(e.retryable)} | ${e.description} |`;
  });
  const internal = ALL.filter((c) => ERROR_CODES[c].kind === 'internal').map((c) => `\`${c}\``);
  return [
    '| code | HTTP status or job | retried? | meaning |',
    '| --- | --- | --- | --- |',
    ...rows,
    '',
    '"retried?": whether the platform runs the job again (up to `ZHINIAN_MAX_ATTEMPTS` runs) before it ends with this code.',
    `Never sent, turned into one of the codes above first: ${internal.join(', ')} (a URL fetch's failures).`,
  ].join('\n');
}

export const ERROR_TABLE_START = '<!-- error-codes:start -->';
export const ERROR_TABLE_END = '<!-- error-codes:end -->';

/** `text` with the block between the markers replaced by the rendered table. */
export function withErrorTable(text: string): string {
  const start = text.indexOf(ERROR_TABLE_START);
  const end = text.indexOf(ERROR_TABLE_END);
  if (start < 0 || end < start) throw new Error(`no ${ERROR_TABLE_START} … ${ERROR_TABLE_END} block`);
  return `${text.slice(0, start + ERROR_TABLE_START.length)}\n${renderErrorTable()}\n${text.slice(end)}`;
}
