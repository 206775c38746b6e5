/**
 * A fake Volcengine Ark video-task API (docs/providers.md §5.3) on 127.0.0.1. It keeps its own model
 * table (independent of the adapter's mapping module, so tests compare two readings of the doc).
 *
 * `baseUrl` already ends in `/api/v3`, like `ZHINIAN_ARK_BASE_URL`.
 * Scenarios: the shared ones, plus `set_limit` (429 `SetLimitExceeded`) [ours].
 */
import { randomBytes, randomInt } from 'node:crypto';
import { createFakeServer, scenarioOf, type FakeResponse, type FakeServer, type RecordedRequest, type SlowFileOptions, type TaskTiming } from './common.ts';

export interface FakeSeedanceOptions extends TaskTiming {
  /** The Bearer token accepted (default `test-ark-key`). */
  apiKey?: string;
  /** Stands in for `execution_expires_after`: an unfinished task older than this is `expired`. */
  expireAfterMs?: number;
  fetchInputs?: boolean;
  slowFile?: boolean | SlowFileOptions;
}

interface FakeSeedanceTask {
  id: string;
  model: string;
  /** The create body as received. */
  body: any;
  scenario: string;
  createdAtMs: number;
  ratio: string;
  resolution: string;
  duration: number;
  seed: number;
  /** Set by DELETE on a queued task. */
  cancelledAtMs: number | null;
  /** Set by DELETE on a finished task: GET answers 404 from then on. */
  deleted: boolean;
}

export interface FakeSeedance {
  /** `http://127.0.0.1:<port>/api/v3` */
  readonly baseUrl: string;
  readonly requests: RecordedRequest[];
  readonly tasks: Map<string, FakeSeedanceTask>;
  /** Create POSTs received, whatever their answer. */
  readonly submitCount: number;
  /** The shared plumbing: clock, result-file and input-fetch logs. */
  readonly server: FakeServer;
  setScenario(name: string, opts?: { times?: number }): void;
  close(): Promise<void>;
}

interface FakeModel {
  modes: Set<'text' | 'first_frame' | 'first_last' | 'reference' | 'media'>;
  durations: [number, number];
  autoDuration: boolean;
  resolutions: string[];
  maxReferences: number;
  audio: boolean;
}

const ALL_RES = ['480p', '720p', '1080p'];
const MODELS: Record<string, FakeModel> = {
  'doubao-seedance-1-0-pro-250528': {
    modes: new Set(['text', 'first_frame', 'first_last']),
    durations: [2, 12],
    autoDuration: false,
    resolutions: ALL_RES,
    maxReferences: 0,
    audio: false,
  },
  'doubao-seedance-1-0-pro-fast-251015': { modes: new Set(['text', 'first_frame']), durations: [2, 12], autoDuration: false, resolutions: ALL_RES, maxReferences: 0, audio: false },
  'doubao-seedance-1-0-lite-t2v-250428': { modes: new Set(['text']), durations: [2, 12], autoDuration: false, resolutions: ALL_RES, maxReferences: 0, audio: false },
  'doubao-seedance-1-0-lite-i2v-250428': {
    modes: new Set(['first_frame', 'first_last', 'reference']),
    durations: [2, 12],
    autoDuration: false,
    resolutions: ALL_RES,
    maxReferences: 4,
    audio: false,
  },
  'doubao-seedance-1-5-pro-251215': {
    modes: new Set(['text', 'first_frame', 'first_last']),
    durations: [4, 12],
    autoDuration: true,
    resolutions: ALL_RES,
    maxReferences: 0,
    audio: true,
  },
  'doubao-seedance-2-0-260128': {
    modes: new Set(['text', 'first_frame', 'first_last', 'reference', 'media']),
    durations: [4, 15],
    autoDuration: true,
    resolutions: ALL_RES,
    maxReferences: 9,
    audio: true,
  },
  'doubao-seedance-2-0-fast-260128': {
    modes: new Set(['text', 'first_frame', 'first_last', 'reference', 'media']),
    durations: [4, 15],
    autoDuration: true,
    resolutions: ['480p', '720p'],
    maxReferences: 9,
    audio: true,
  },
};
const RATIOS = ['16:9', '4:3', '1:1', '3:4', '9:16', '21:9', 'adaptive'];
const TASKS_PATH = '/api/v3/contents/generations/tasks';
const DEFAULT_EXPIRES_SECONDS = 172_800;

function arkError(status: number, code: string, type: string, message: string, param?: string): FakeResponse {
  return { status, json: { error: { code, message: `${message} Request ID: ${randomBytes(8).toString('hex')}`, param, type } } };
}

const badParam = (param: string, message: string) =>
  arkError(400, 'InvalidParameter', 'BadRequest', `The parameter \`${param}\` specified in the request is not valid: ${message}.`, param);

/** The refusals Ark would give a create body, or null. */
function validateCreate(body: any): FakeResponse | null {
  if (!body || typeof body !== 'object') return arkError(400, 'MissingParameter', 'BadRequest', 'The request body is not valid JSON.');
  if (typeof body.model !== 'string') return arkError(400, 'MissingParameter', 'BadRequest', 'The request failed because it is missing `model`.', 'model');
  const model = MODELS[body.model];
  if (!model) return arkError(404, 'InvalidEndpointOrModel.NotFound', 'NotFound', `The model or endpoint ${body.model} does not exist or you do not have access to it.`);
  if (!Array.isArray(body.content) || body.content.length === 0)
    return arkError(400, 'MissingParameter', 'BadRequest', 'The request failed because it is missing `content`.', 'content');

  let texts = 0;
  const roles: string[] = [];
  let media = 0;
  for (const item of body.content) {
    if (item?.type === 'text') {
      if (typeof item.text !== 'string') return badParam('content.text', 'text must be a string');
      texts++;
    } else if (item?.type === 'image_url') {
      if (typeof item.image_url?.url !== 'string') return badParam('content.image_url', 'url is required');
      const role = item.role ?? 'first_frame';
      if (!['first_frame', 'last_frame', 'reference_image'].includes(role)) return badParam('content.role', `unknown role ${role}`);
      roles.push(role);
    } else if (item?.type === 'video_url' || item?.type === 'audio_url') {
      const key = item.type as 'video_url' | 'audio_url';
      if (typeof item[key]?.url !== 'string') return badParam(`content.${key}`, 'url is required');
      const expected = key === 'video_url' ? 'reference_video' : 'reference_audio';
      if (item.role !== expected) return badParam('content.role', `${key} needs role ${expected}`);
      if (!model.modes.has('media')) return badParam(`content.${key}`, `${body.model} does not take ${key}`);
      media++;
    } else {
      return badParam('content.type', `unknown type ${String(item?.type)}`);
    }
  }
  if (texts > 1) return badParam('content', 'at most one text item');
  const firsts = roles.filter((r) => r === 'first_frame').length;
  const lasts = roles.filter((r) => r === 'last_frame').length;
  const refs = roles.filter((r) => r === 'reference_image').length;
  if (refs > 0 && firsts + lasts > 0) return badParam('content.role', 'reference images cannot be mixed with first/last frames');
  if (media > 0 && firsts + lasts > 0) return badParam('content.role', 'reference media cannot be mixed with first/last frames');
  if (firsts > 1 || lasts > 1) return badParam('content.role', 'one first_frame and one last_frame at most');
  if (lasts === 1 && firsts === 0) return badParam('content.role', 'last_frame needs a first_frame');
  const mode = refs > 0 ? 'reference' : lasts === 1 ? 'first_last' : firsts === 1 ? 'first_frame' : media > 0 ? 'media' : 'text';
  if (texts === 0 && mode === 'text') return arkError(400, 'MissingParameter', 'BadRequest', 'The request needs a text prompt or an image.', 'content');
  if (!model.modes.has(mode)) return badParam('content', `${body.model} does not support ${mode}`);
  if (refs > model.maxReferences) return badParam('content.image_url', `at most ${model.maxReferences} reference images`);
  const withReferences = refs > 0 || media > 0;

  if (body.ratio !== undefined && (!RATIOS.includes(body.ratio) || (body.ratio === 'adaptive' && withReferences))) return badParam('ratio', String(body.ratio));
  if (body.resolution !== undefined && (!model.resolutions.includes(body.resolution) || (body.resolution === '1080p' && withReferences)))
    return badParam('resolution', String(body.resolution));
  if (body.duration !== undefined) {
    const d = body.duration;
    const ok = Number.isInteger(d) && ((d >= model.durations[0] && d <= model.durations[1]) || (d === -1 && model.autoDuration));
    if (!ok) return badParam('duration', String(d));
  }
  if (body.watermark !== undefined && typeof body.watermark !== 'boolean') return badParam('watermark', String(body.watermark));
  if (body.generate_audio !== undefined && (typeof body.generate_audio !== 'boolean' || !model.audio)) return badParam('generate_audio', String(body.generate_audio));
  const expires = body.execution_expires_after;
  if (expires !== undefined && (!Number.isInteger(expires) || expires < 3600 || expires > 259_200)) return badParam('execution_expires_after', String(expires));
  return null;
}

function newTaskId(nowMs: number): string {
  const stamp = new Date(nowMs).toISOString().replace(/[-:T]/g, '').slice(0, 14);
  const chars = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const tail = Array.from({ length: 5 }, () => chars[randomInt(chars.length)]).join('');
  return `cgt-${stamp}-${tail}`;
}

const SUBMIT_FAULTS: Record<string, () => FakeResponse> = {
  rate_limit: () => arkError(429, 'RateLimitExceeded.EndpointRPMExceeded', 'TooManyRequests', 'The request has exceeded the RPM limit of the endpoint.'),
  quota: () => arkError(429, 'QuotaExceeded', 'TooManyRequests', 'Your account has run out of free quota or has too many queued tasks.'),
  set_limit: () => arkError(429, 'SetLimitExceeded', 'TooManyRequests', 'Your account has reached the inference limit you set.'),
  server_error: () => arkError(500, 'InternalServiceError', 'InternalServerError', 'The service encountered an unexpected internal error.'),
  moderation_submit: () => arkError(400, 'InputTextSensitiveContentDetected', 'BadRequest', 'The request failed because the input text may contain sensitive information.'),
};

export async function startFakeSeedance(opts: FakeSeedanceOptions = {}): Promise<FakeSeedance> {
  const apiKey = opts.apiKey ?? 'test-ark-key';
  const tasks = new Map<string, FakeSeedanceTask>();
  let submitCount = 0;
  // Assigned right below; routes only run once the server listens.
  let server!: FakeServer;

  const unauthorizedAnswer = () => arkError(401, 'AuthenticationError', 'Unauthorized', 'The API key in the request is missing or invalid.');
  const unauthorized = (req: RecordedRequest) => (req.headers.authorization !== `Bearer ${apiKey}` || server.scenarios.peek() === 'bad_auth' ? unauthorizedAnswer() : null);

  function elapsed(task: FakeSeedanceTask): number {
    return server.clock.now() - task.createdAtMs;
  }

  /** The task's status at this moment, derived from elapsed time and its scenario. */
  function statusOf(task: FakeSeedanceTask): 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'expired' {
    if (task.cancelledAtMs !== null) return 'cancelled';
    const phase = server.clock.phaseOf(task.createdAtMs);
    const expireAfterMs = opts.expireAfterMs ?? (task.body.execution_expires_after ?? DEFAULT_EXPIRES_SECONDS) * 1000;
    const finished = phase === 'finished' && task.scenario !== 'never_finish';
    if (!finished) return elapsed(task) >= expireAfterMs ? 'expired' : phase === 'queued' ? 'queued' : 'running';
    if (task.scenario === 'provider_expired') return 'expired';
    if (task.scenario === 'moderation_result') return 'failed';
    return 'succeeded';
  }

  function taskObject(task: FakeSeedanceTask): Record<string, unknown> {
    const status = statusOf(task);
    const finishedAtMs = task.createdAtMs + server.clock.queuedMs + server.clock.runningMs;
    const object: Record<string, unknown> = {
      id: task.id,
      model: task.model,
      status,
      error: null,
      seed: task.seed,
      resolution: task.resolution,
      ratio: task.ratio,
      duration: task.duration,
      framespersecond: 24,
      created_at: Math.floor(task.createdAtMs / 1000),
      updated_at: Math.floor(Math.min(server.clock.now(), finishedAtMs) / 1000),
      service_tier: 'default',
      execution_expires_after: task.body.execution_expires_after ?? DEFAULT_EXPIRES_SECONDS,
    };
    if (task.body.generate_audio !== undefined) object.generate_audio = task.body.generate_audio;
    if (status === 'succeeded') {
      // Re-signed on every GET, like a presigned object-store URL.
      const url = server.fileUrl(task.id, 1, { kind: 'mp4' }, { forbidden: task.scenario === 'url_expired' });
      object.content = { video_url: `${url}&X-Tos-Algorithm=TOS4-HMAC-SHA256&X-Tos-Expires=86400` };
      const tokens = Math.round((task.duration * 24 * 1280 * 720) / 1024);
      object.usage = { completion_tokens: tokens, total_tokens: tokens };
    }
    if (status === 'failed') {
      object.error = { code: 'OutputVideoSensitiveContentDetected', message: 'The request failed because the output video may contain sensitive information.' };
    }
    return object;
  }

  async function create(req: RecordedRequest): Promise<FakeResponse> {
    submitCount++;
    // A wrong key is refused before a scenario is used up; `bad_auth` counts as one submit.
    if (req.headers.authorization !== `Bearer ${apiKey}`) return unauthorizedAnswer();
    const prompt = Array.isArray(req.body?.content) ? req.body.content.find((c: any) => c?.type === 'text')?.text : undefined;
    const scenario = scenarioOf(prompt, server.scenarios);
    const fault = SUBMIT_FAULTS[scenario];
    if (fault) return fault();
    if (scenario === 'bad_auth') return unauthorizedAnswer();
    const refused = validateCreate(req.body);
    if (refused) return refused;
    const urls = req.body.content.flatMap((c: any) => [c.image_url?.url, c.video_url?.url, c.audio_url?.url]).filter((u: unknown) => typeof u === 'string');
    for (const fetched of await server.fetchInputs(urls)) {
      if (fetched.status !== 200) return badParam('content.image_url', `could not download ${fetched.url} (${fetched.status ?? fetched.error})`);
    }
    const now = server.clock.now();
    const body = req.body;
    const task: FakeSeedanceTask = {
      id: newTaskId(now),
      model: body.model,
      body,
      scenario,
      createdAtMs: now,
      // `adaptive` resolves to a fixed ratio; the fake does not look at the image.
      ratio: !body.ratio || body.ratio === 'adaptive' ? '16:9' : body.ratio,
      resolution: body.resolution ?? '720p',
      duration: body.duration === undefined || body.duration === -1 ? 5 : body.duration,
      seed: Number.isInteger(body.seed) && body.seed !== -1 ? body.seed : randomInt(2 ** 31),
      cancelledAtMs: null,
      deleted: false,
    };
    tasks.set(task.id, task);
    return { status: 200, json: { id: task.id } };
  }

  function find(id: string): FakeSeedanceTask | FakeResponse {
    const task = tasks.get(decodeURIComponent(id));
    // Unknown ids: the body is [U].
    if (!task || task.deleted || task.scenario === 'task_lost') {
      return arkError(404, 'ResourceNotFound', 'NotFound', `The specified task ${id} is not found.`);
    }
    return task;
  }

  function get(req: RecordedRequest, [id]: string[]): FakeResponse {
    const denied = unauthorized(req);
    if (denied) return denied;
    const task = find(id!);
    if ('status' in task) return task;
    return { status: 200, json: taskObject(task) };
  }

  function remove(req: RecordedRequest, [id]: string[]): FakeResponse {
    const denied = unauthorized(req);
    if (denied) return denied;
    const task = find(id!);
    if ('status' in task) return task;
    const status = statusOf(task);
    if (status === 'queued') {
      task.cancelledAtMs = server.clock.now();
      return { status: 200, json: {} };
    }
    if (status === 'succeeded' || status === 'failed' || status === 'expired') {
      task.deleted = true;
      return { status: 200, json: {} };
    }
    // running or cancelled: refused (body [U]).
    return badParam('id', `a task whose status is ${status} cannot be cancelled or deleted`);
  }

  server = await createFakeServer({
    ...opts,
    routes: [
      { method: 'POST', path: TASKS_PATH, handle: create },
      { method: 'GET', path: /^\/api\/v3\/contents\/generations\/tasks\/([^/]+)$/, handle: get },
      { method: 'DELETE', path: /^\/api\/v3\/contents\/generations\/tasks\/([^/]+)$/, handle: remove },
    ],
    fallback: () => arkError(404, 'NotFound', 'NotFound', 'The requested path does not exist.'),
  });

  return {
    baseUrl: `${server.baseUrl}/api/v3`,
    requests: server.requests,
    tasks,
    get submitCount() {
      return submitCount;
    },
    server,
    setScenario: (name, scenarioOpts) => server.scenarios.set(name, scenarioOpts),
    close: () => server.close(),
  };
}
