import { z } from 'zod';
import { listAssetsQuerySchema, registerAssetBodySchema } from '../assets/index.ts';
import { ASSET_KINDS, ASSET_SOURCES, CAPABILITIES, JOB_STATUSES, STATUS_DETAIL_CODES } from '../contract/index.ts';
import { createJobBodySchema, listJobsQuerySchema } from '../jobs/index.ts';
import { API_ERROR_CODES, ERROR_CODES, JOB_ERROR_CODES } from '../lib/error-codes.ts';
import { deliveryViewSchema } from '../webhooks/index.ts';

/**
 * The OpenAPI 3.1 document, rendered from the very zod schemas that validate requests (so the
 * two cannot drift), plus descriptive schemas of the objects the API returns.
 */
const toSchema = (schema: z.ZodType) => z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' });

const isoTime = z.string().describe('ISO 8601 UTC with milliseconds');
/** `code`: meaning; … for a schema's description, from the error catalogue. */
const codeList = (codes: readonly (keyof typeof ERROR_CODES)[]) => codes.map((c) => `${c}: ${ERROR_CODES[c].description}`).join(' ');
const jobSchema = z.object({
  id: z.string().describe('job_…'),
  capability: z.enum(CAPABILITIES),
  status: z.enum(JOB_STATUSES),
  prompt: z.string().nullable(),
  params: z.record(z.string(), z.unknown()).describe('Validated request fields with defaults filled in'),
  inputAssetIds: z.array(z.string()),
  outputAssetIds: z.array(z.string()),
  error: z.object({ code: z.enum(JOB_ERROR_CODES).describe(codeList(JOB_ERROR_CODES)), message: z.string().describe('For people') }).nullable(),
  progress: z.number().int().min(0).max(100).nullable(),
  engine: z.string(),
  webhookUrl: z.string().nullable(),
  metadata: z.record(z.string(), z.unknown()).nullable(),
  createdAt: isoTime,
  updatedAt: isoTime,
  startedAt: isoTime.nullable(),
  finishedAt: isoTime.nullable(),
  statusDetail: z
    .object({
      code: z.enum(STATUS_DETAIL_CODES),
      message: z.string().describe('For people'),
      retryAt: isoTime.nullable().describe('When it is tried again, when known'),
    })
    .nullable()
    .describe('Why a queued or running job is not simply being worked on; null when it is, or when it ended'),
});
const assetSchema = z.object({
  id: z.string().describe('asset_…'),
  kind: z.enum(ASSET_KINDS),
  name: z.string(),
  mimeType: z.string(),
  bytes: z.number().int(),
  sha256: z.string(),
  width: z.number().int().nullable(),
  height: z.number().int().nullable(),
  durationSeconds: z.number().nullable(),
  source: z.enum(ASSET_SOURCES),
  sourceUrl: z.string().nullable(),
  jobId: z.string().nullable(),
  downloadUrl: z.string(),
  createdAt: isoTime,
});
const errorSchema = z.object({
  error: z.string().describe('What went wrong, naming the field'),
  code: z.enum(API_ERROR_CODES).describe(`Stable machine-readable code: ${codeList(API_ERROR_CODES)}`),
});
const capabilitiesSchema = z.object({
  capabilities: z.array(z.object({ capability: z.enum(CAPABILITIES), description: z.string(), engines: z.array(z.string()), params: z.record(z.string(), z.unknown()) })),
});

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: object) => ({ 'application/json': { schema } });
const errors = (...codes: number[]) => Object.fromEntries(codes.map((c) => [String(c), { description: ERROR_TEXT[c], content: json(ref('Error')) }]));
const headerRef = (name: string) => ({ $ref: `#/components/headers/${name}` });
/** The request rate limit's headers (components.headers). */
const RATE_HEADERS = {
  'RateLimit-Limit': {
    description:
      "While a request rate limit applies to the client (ZHINIAN_RATE_LIMIT_REQUESTS_PER_MINUTE or the client's own): its requests per sliding minute. On a 429 of the job-creation limit: that limit.",
    schema: { type: 'integer', minimum: 1 },
  },
  'RateLimit-Remaining': { description: 'Requests that still fit in the sliding minute after this one (0 on a 429).', schema: { type: 'integer', minimum: 0 } },
  'RateLimit-Reset': {
    description: 'Seconds until one more request fits than RateLimit-Remaining says, if none is made meanwhile (on a 429: the Retry-After).',
    schema: { type: 'integer', minimum: 1 },
  },
  'Retry-After': { description: 'Seconds to wait before the next request fits', schema: { type: 'integer', minimum: 1 } },
};
const rateHeaders = Object.fromEntries(['RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset'].map((h) => [h, headerRef(h)]));
/**
 * An operation the request rate limit counts (every /api/v1 one with a key): its answers but
 * the 401 carry the RateLimit headers while a limit applies to the client, and it may answer 429.
 */
const counted = (responses: Record<string, object>) =>
  Object.fromEntries(
    Object.entries({ ...responses, ...errors(429) }).map(([status, response]) => [
      status,
      status === '401' ? response : { ...response, headers: status === '429' ? { ...rateHeaders, 'Retry-After': headerRef('Retry-After') } : rateHeaders },
    ]),
  );
const ERROR_TEXT: Record<number, string> = {
  400: 'Bad request; the message names the field',
  401: 'Missing, wrong, expired or revoked API key, or a disabled client',
  403: 'The client may not use that engine (its allowed engines, set in the console)',
  408: 'The request did not fully arrive within ZHINIAN_REQUEST_TIMEOUT_SECONDS',
  404: "Not found, or not this client's",
  409: 'Idempotency conflict, or the job is already terminal',
  413: "Too large: the body, a file (ZHINIAN_MAX_UPLOAD_BYTES) or an image's width × height (ZHINIAN_MAX_INPUT_PIXELS)",
  414: 'A path segment (an id) is too long',
  416: 'Range not satisfiable',
  429: "Over the client's request rate limit (ZHINIAN_RATE_LIMIT_REQUESTS_PER_MINUTE) or, creating a job, its job-creation limit (ZHINIAN_RATE_LIMIT_JOBS_PER_MINUTE), per sliding minute; Retry-After says how many seconds to wait",
};
const queryParams = (schema: z.ZodObject) => {
  const rendered = toSchema(schema) as { properties: Record<string, { description?: string }> };
  return Object.entries(rendered.properties).map(([name, s]) => ({ name, in: 'query', required: false, schema: s, description: s.description }));
};
const idParam = (what: string) => [{ name: 'id', in: 'path', required: true, schema: { type: 'string', maxLength: 100 }, description: `${what} id` }];
/** `Prefer: wait=N` on create and get (CONTRACT "Live status"). */
const PREFER_WAIT = {
  name: 'Prefer',
  in: 'header',
  required: false,
  schema: { type: 'string', examples: ['wait=30'] },
  description: 'wait=N (N 1–60): answer when the job is terminal or after N seconds, whichever comes first (the status code is the same). Any other value is ignored (RFC 7240).',
};
const PREFERENCE_APPLIED = {
  'Preference-Applied': { description: 'wait=N when a valid Prefer: wait=N was honoured', schema: { type: 'string' } },
};
/** Adds the Preference-Applied header to an operation's success answers. */
const withPreferenceApplied = (responses: Record<string, { headers?: object }>, statuses: string[]) =>
  Object.fromEntries(Object.entries(responses).map(([status, r]) => [status, statuses.includes(status) ? { ...r, headers: { ...r.headers, ...PREFERENCE_APPLIED } } : r]));
const header = (name: string, description: string) => ({ name, in: 'header', required: false, schema: { type: 'string' }, description });

export function buildOpenApi(serverUrl: string): object {
  const secured = [{ bearer: [] }, { apiKeyHeader: [] }];
  return {
    openapi: '3.1.0',
    info: { title: 'Zhinian open API', version: '1.0.0', description: 'AI image and video generation jobs: create, watch, download, get webhooks.' },
    servers: [{ url: serverUrl }],
    security: secured,
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer' },
        apiKeyHeader: { type: 'apiKey', in: 'header', name: 'X-Zhinian-Api-Key' },
      },
      headers: RATE_HEADERS,
      schemas: {
        CreateJobRequest: toSchema(createJobBodySchema),
        RegisterAssetRequest: toSchema(registerAssetBodySchema),
        Job: toSchema(jobSchema),
        Asset: toSchema(assetSchema),
        Delivery: toSchema(deliveryViewSchema),
        Error: toSchema(errorSchema),
        Capabilities: toSchema(capabilitiesSchema),
      },
    },
    paths: {
      '/api/v1/openapi.json': { get: { summary: 'This document', security: [], responses: { 200: { description: 'OpenAPI 3.1 document' } } } },
      '/api/v1/capabilities': {
        get: {
          summary: 'What can be generated, by which engines, with which parameters',
          responses: counted({ 200: { description: 'OK', content: json(ref('Capabilities')) }, ...errors(401) }),
        },
      },
      '/api/v1/jobs': {
        post: {
          summary: 'Create a job',
          parameters: [{ name: 'Idempotency-Key', in: 'header', required: false, schema: { type: 'string', minLength: 1, maxLength: 255 } }, PREFER_WAIT],
          requestBody: { required: true, content: json(ref('CreateJobRequest')) },
          responses: withPreferenceApplied(
            counted({
              201: { description: 'Created', content: json({ type: 'object', properties: { job: ref('Job'), reused: { const: false } } }) },
              200: { description: 'Same Idempotency-Key and body: the existing job', content: json({ type: 'object', properties: { job: ref('Job'), reused: { const: true } } }) },
              ...errors(400, 401, 403, 408, 409, 413),
            }),
            ['200', '201'],
          ),
        },
        get: {
          summary: 'List jobs, newest first',
          parameters: queryParams(listJobsQuerySchema),
          responses: counted({
            200: { description: 'OK', content: json({ type: 'object', properties: { jobs: { type: 'array', items: ref('Job') }, nextBefore: { type: ['string', 'null'] } } }) },
            ...errors(400, 401),
          }),
        },
      },
      '/api/v1/jobs/{id}': {
        get: {
          summary: 'Get a job',
          parameters: [...idParam('Job'), PREFER_WAIT],
          responses: withPreferenceApplied(counted({ 200: { description: 'OK', content: json({ type: 'object', properties: { job: ref('Job') } }) }, ...errors(401, 404, 414) }), [
            '200',
          ]),
        },
      },
      '/api/v1/jobs/{id}/events': {
        get: {
          operationId: 'getJobEvents',
          summary: "The job's live status as server-sent events",
          description:
            'An event `job` (data: the Job JSON, `id:` the job version) at once and on every change of status, progress or statusDetail; a comment line `: keep-alive` every 15 s; the stream ends after the terminal event. ' +
            'Last-Event-ID (header, or the lastEventId query parameter) resumes: the current state is sent at once only when it is newer. A terminal job whose last event the client has already seen answers 204 (an EventSource stops reconnecting). ' +
            'At most 100 open streams per client on one server; one more is answered 429.',
          parameters: [
            ...idParam('Job'),
            header('Last-Event-ID', 'The id of the last event received (a job version): resume after it'),
            {
              name: 'lastEventId',
              in: 'query',
              required: false,
              schema: { type: 'string', pattern: '^[0-9]+$' },
              description: 'Same as the Last-Event-ID header, for clients that cannot set headers',
            },
          ],
          responses: counted({
            200: {
              description: 'The event stream',
              content: { 'text/event-stream': { schema: { type: 'string', description: 'event: job\nid: <version>\ndata: <Job JSON>\n\n, repeated; `: keep-alive` comments' } } },
            },
            204: { description: 'The job is terminal and the client has seen its last event: nothing more will come' },
            ...errors(400, 401, 404, 414),
          }),
        },
      },
      '/api/v1/jobs/{id}/cancel': {
        post: {
          summary: 'Cancel a queued or running job',
          parameters: idParam('Job'),
          responses: counted({ 200: { description: 'Cancelled', content: json({ type: 'object', properties: { job: ref('Job') } }) }, ...errors(401, 404, 409, 414) }),
        },
      },
      '/api/v1/jobs/{id}/deliveries': {
        get: {
          operationId: 'listJobDeliveries',
          summary: "The job's webhook deliveries, oldest first, each with every attempt",
          parameters: idParam('Job'),
          responses: counted({
            200: { description: 'OK', content: json({ type: 'object', properties: { deliveries: { type: 'array', items: ref('Delivery') } }, required: ['deliveries'] }) },
            ...errors(401, 404, 414),
          }),
        },
      },
      '/api/v1/jobs/{id}/deliveries/{deliveryId}/redeliver': {
        post: {
          operationId: 'redeliverJobDelivery',
          summary: 'Send a delivery once more, now, whatever its status',
          description:
            'One more attempt as soon as possible, with the same webhook-id (X-Zhinian-Delivery) and body, freshly signed. A delivery whose attempt is being made at that moment is left to it. A failing redelivery is not retried on the schedule again once the schedule is used up.',
          parameters: [...idParam('Job'), { name: 'deliveryId', in: 'path', required: true, schema: { type: 'string', maxLength: 100 }, description: 'Delivery id (whd_…)' }],
          responses: counted({
            202: { description: 'Accepted: the delivery as it is now', content: json({ type: 'object', properties: { delivery: ref('Delivery') }, required: ['delivery'] }) },
            ...errors(401, 404, 414),
          }),
        },
      },
      '/api/v1/assets': {
        post: {
          summary: 'Upload files (multipart, field "files") or register a URL (JSON)',
          requestBody: {
            required: true,
            content: {
              'multipart/form-data': { schema: { type: 'object', properties: { files: { type: 'array', items: { type: 'string', format: 'binary' } } }, required: ['files'] } },
              ...json(ref('RegisterAssetRequest')),
            },
          },
          responses: counted({
            201: {
              description: 'Stored: `{ assets }` for uploads, `{ asset }` for a URL',
              content: json({ type: 'object', properties: { assets: { type: 'array', items: ref('Asset') }, asset: ref('Asset') } }),
            },
            ...errors(400, 401, 408, 413),
          }),
        },
        get: {
          summary: 'List assets, newest first',
          parameters: queryParams(listAssetsQuerySchema),
          responses: counted({
            200: { description: 'OK', content: json({ type: 'object', properties: { assets: { type: 'array', items: ref('Asset') }, nextBefore: { type: ['string', 'null'] } } }) },
            ...errors(400, 401),
          }),
        },
      },
      '/api/v1/assets/{id}': {
        get: {
          summary: 'Get an asset',
          parameters: idParam('Asset'),
          responses: counted({ 200: { description: 'OK', content: json({ type: 'object', properties: { asset: ref('Asset') } }) }, ...errors(401, 404, 414) }),
        },
      },
      '/api/v1/assets/{id}/download': {
        get: {
          summary: 'Download the bytes (Range, ETag, Content-Disposition)',
          description:
            "Needs the owner's key, or a signed link (`expires` and `signature`, as handed to remote engines) that opens this one download. A download through a signed link is not counted by the request rate limit and carries no RateLimit headers.",
          parameters: [
            ...idParam('Asset'),
            header('Range', 'One byte range (`bytes=0-99`, `bytes=100-`, `bytes=-10`); an invalid one is ignored'),
            header('If-None-Match', '`*` or entity tags (weak ones too): a match answers 304'),
            header('If-Range', 'The ETag: the Range applies only while the file is unchanged'),
            { name: 'expires', in: 'query', required: false, schema: { type: 'string' }, description: 'Signed link: Unix seconds it is valid until' },
            { name: 'signature', in: 'query', required: false, schema: { type: 'string' }, description: 'Signed link: its signature' },
          ],
          responses: counted({
            200: { description: 'The file', content: { '*/*': { schema: { type: 'string', format: 'binary' } } } },
            206: { description: 'Part of the file' },
            304: { description: 'Not modified (If-None-Match)' },
            ...errors(401, 404, 414, 416),
          }),
        },
      },
      '/healthz': { get: { summary: 'Liveness', security: [], responses: { 200: { description: 'Alive' } } } },
      '/readyz': { get: { summary: 'Readiness: database and storage reachable', security: [], responses: { 200: { description: 'Ready' }, 503: { description: 'Not ready' } } } },
    },
  };
}

/** `params` of `/capabilities`: the JSON Schema of each field the capability takes. */
export function capabilityParams(fields: readonly string[]): Record<string, unknown> {
  const all = (toSchema(createJobBodySchema) as { properties: Record<string, unknown> }).properties;
  return Object.fromEntries(fields.map((f) => [f, all[f]]));
}
