/**
 * A fake EvoLink task API (docs/providers.md §5.4) on 127.0.0.1, with its own per-model parameter
 * rules (independent of the adapter's mapping module).
 *
 * Scenarios: the shared ones plus `timeout` (failed `generation_timeout`), `cancelled` (failed
 * `request_cancelled`) and `result_data_only` [ours] (URLs only in `result_data[]`).
 * `provider_expired` behaves as `timeout`: EvoLink has no expiry status.
 */
import { createHash, randomInt } from 'node:crypto';
import { createFakeServer, scenarioOf, type FakeResponse, type FakeServer, type RecordedRequest, type SlowFileOptions, type TaskTiming } from './common.ts';

export interface FakeEvolinkOptions extends TaskTiming {
  /** The Bearer token accepted (default `sk-evo-test`). */
  apiKey?: string;
  /** Images made when the body has no `n` (default 1), as a model that returns several by default. */
  defaultN?: number;
  fetchInputs?: boolean;
  slowFile?: boolean | SlowFileOptions;
}

interface FakeEvolinkTask {
  id: string;
  model: string;
  /** The create body as received. */
  body: any;
  scenario: string;
  createdAtMs: number;
  n: number;
  width: number;
  height: number;
  idempotencyKey: string | null;
}

export interface FakeEvolink {
  /** `http://127.0.0.1:<port>` */
  readonly baseUrl: string;
  readonly requests: RecordedRequest[];
  readonly tasks: Map<string, FakeEvolinkTask>;
  /** Create POSTs received, whatever their answer (idempotent replays included). */
  readonly submitCount: number;
  readonly server: FakeServer;
  setScenario(name: string, opts?: { times?: number }): void;
  close(): Promise<void>;
}

type Family = 'gpt' | 'seedream' | 'gemini';
interface FakeModel {
  family: Family;
  qualities: string[];
  n: (n: number) => boolean;
}

// Per-model rules [U]: gpt-image-1's `n` range and `auto` quality are unknown; the fake refuses `auto` there.
const MODELS: Record<string, FakeModel> = {
  'gpt-image-1': { family: 'gpt', qualities: ['low', 'medium', 'high'], n: (n) => n >= 1 && n <= 4 },
  'gpt-image-1.5': { family: 'gpt', qualities: ['low', 'medium', 'high', 'auto'], n: (n) => n >= 1 && n <= 4 },
  'gpt-4o-image': { family: 'gpt', qualities: ['low', 'medium', 'high'], n: (n) => [1, 2, 4].includes(n) },
  'gpt-image-2': { family: 'gpt', qualities: ['low', 'medium', 'high', 'auto'], n: (n) => n >= 1 && n <= 10 },
  'doubao-seedream-4.0': { family: 'seedream', qualities: [], n: (n) => n >= 1 && n <= 4 },
  'gemini-2.5-flash-image': { family: 'gemini', qualities: [], n: (n) => n >= 1 && n <= 4 },
};
const GPT_SIZES: Record<string, [number, number]> = {
  '1:1': [1024, 1024],
  '2:3': [1024, 1536],
  '3:2': [1536, 1024],
  '1024x1024': [1024, 1024],
  '1024x1536': [1024, 1536],
  '1536x1024': [1536, 1024],
};
const GEMINI_RATIOS = ['1:1', '2:3', '3:2', '3:4', '4:3', '4:5', '5:4', '9:16', '16:9', '21:9'];
const MAX_IMAGE_URLS = 16;

function evoError(status: number, code: string | number, message: string, type: string, param?: string, headers?: Record<string, string>): FakeResponse {
  return { status, json: { error: { code, message, type, param: param ?? null } }, headers };
}

const badParam = (param: string, message: string) => evoError(400, 'invalid_parameters', message, 'invalid_request_error', param);

/** The pixel size a `size` value stands for, or null when the model does not take it. */
function sizeOf(family: Family, size: unknown): [number, number] | null {
  if (size === undefined) return [1024, 1024];
  if (typeof size !== 'string') return null;
  if (family === 'gpt') return GPT_SIZES[size] ?? null;
  if (family === 'gemini') {
    if (!GEMINI_RATIOS.includes(size)) return null;
    const [w, h] = size.split(':').map(Number);
    return w! >= h! ? [1024, Math.round((1024 * h!) / w!)] : [Math.round((1024 * w!) / h!), 1024];
  }
  const preset = { '1K': 1024, '2K': 2048, '4K': 4096 }[size];
  if (preset) return [preset, preset];
  const match = /^(\d+)x(\d+)$/.exec(size);
  if (!match) return null;
  const w = Number(match[1]);
  const h = Number(match[2]);
  return w * h >= 1280 * 720 && w <= 4096 && h <= 4096 ? [w, h] : null;
}

function validateCreate(body: any, defaultN: number): FakeResponse | { model: FakeModel; n: number; width: number; height: number } {
  if (!body || typeof body !== 'object') return evoError(400, 'invalid_request', 'Request body must be JSON.', 'invalid_request_error');
  if (typeof body.model !== 'string' || !body.model) return badParam('model', 'model is required');
  const model = MODELS[body.model];
  if (!model) return badParam('model', `model ${body.model} is not supported`);
  if (typeof body.prompt !== 'string' || !body.prompt) return badParam('prompt', 'prompt is required');
  const size = sizeOf(model.family, body.size);
  if (!size) return badParam('size', `size ${String(body.size)} is not supported by ${body.model}`);
  if (body.quality !== undefined && !model.qualities.includes(body.quality)) return badParam('quality', `quality ${String(body.quality)} is not supported by ${body.model}`);
  const n = body.n ?? defaultN;
  if (!Number.isInteger(n) || !model.n(n)) return badParam('n', `n ${String(body.n)} is not supported by ${body.model}`);
  if (body.image_urls !== undefined) {
    if (!Array.isArray(body.image_urls) || body.image_urls.some((u: unknown) => typeof u !== 'string' || !/^https?:\/\//.test(u)))
      return badParam('image_urls', 'image_urls must be http(s) URLs');
    if (body.image_urls.length > MAX_IMAGE_URLS) return badParam('image_urls', `at most ${MAX_IMAGE_URLS} images`);
  }
  return { model, n, width: size[0], height: size[1] };
}

/** Key order must not matter when comparing a replayed body. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

const SUBMIT_FAULTS: Record<string, () => FakeResponse> = {
  rate_limit: () => evoError(429, 'rate_limit_exceeded', 'Too many requests, please retry later.', 'rate_limit_error', undefined, { 'retry-after': '1' }),
  quota: () => evoError(402, 'insufficient_quota', 'Your credit balance is too low.', 'insufficient_quota'),
  server_error: () => evoError(503, 'service_unavailable', 'The service is temporarily unavailable.', 'server_error'),
  moderation_submit: () => evoError(400, 'content_policy_violation', 'Your request was rejected by the safety system.', 'invalid_request_error', 'prompt'),
};

const TASK_FAILURES: Record<string, { code: string; message: string }> = {
  moderation_result: { code: 'content_policy_violation', message: 'The generated image was blocked by the content policy.' },
  timeout: { code: 'generation_timeout', message: 'Generation timed out.' },
  provider_expired: { code: 'generation_timeout', message: 'Generation timed out.' },
  cancelled: { code: 'request_cancelled', message: 'The task was cancelled.' },
};

export async function startFakeEvolink(opts: FakeEvolinkOptions = {}): Promise<FakeEvolink> {
  const apiKey = opts.apiKey ?? 'sk-evo-test';
  const tasks = new Map<string, FakeEvolinkTask>();
  const byKey = new Map<string, { bodyHash: string; taskId: string }>();
  let submitCount = 0;
  let server!: FakeServer;

  // The 401 body is [U].
  const unauthorizedAnswer = () => evoError(401, 'invalid_api_key', 'Invalid API key.', 'authentication_error');

  function taskObject(task: FakeEvolinkTask): Record<string, unknown> {
    const phase = server.clock.phaseOf(task.createdAtMs);
    const object: Record<string, unknown> = {
      created: Math.floor(task.createdAtMs / 1000),
      id: task.id,
      model: task.model,
      object: 'image.generation.task',
      progress: 0,
      status: 'pending',
      type: 'image',
      task_info: { can_cancel: true, estimated_time: 100 },
      usage: { billing_rule: 'per_call', credits_reserved: 2.5 * task.n, user_group: 'default' },
    };
    if (phase === 'queued') return object;
    if (phase === 'running' || task.scenario === 'never_finish') {
      // 10–90 while running; a task that never finishes sits at 90.
      const share = task.scenario === 'never_finish' && phase === 'finished' ? 100 : server.clock.progressOf(task.createdAtMs);
      return { ...object, status: 'processing', progress: 10 + Math.floor((share * 80) / 100) };
    }
    const failure = TASK_FAILURES[task.scenario];
    if (failure) return { ...object, status: 'failed', progress: 100, error: failure };
    const urls = Array.from({ length: task.n }, (_, i) =>
      server.fileUrl(task.id, i + 1, { kind: 'png', width: task.width, height: task.height }, { forbidden: task.scenario === 'url_expired' }),
    );
    if (task.scenario === 'result_data_only') {
      return { ...object, status: 'completed', progress: 100, result_data: urls.map((url, i) => ({ image_url: url, result_id: `${task.id}-${i}` })) };
    }
    return { ...object, status: 'completed', progress: 100, results: urls };
  }

  async function create(req: RecordedRequest): Promise<FakeResponse> {
    submitCount++;
    if (req.headers.authorization !== `Bearer ${apiKey}`) return unauthorizedAnswer();
    const key = typeof req.headers['idempotency-key'] === 'string' ? req.headers['idempotency-key'] : null;
    const bodyHash = createHash('sha256').update(canonical(req.body)).digest('hex');
    if (key) {
      const seen = byKey.get(key);
      if (seen && seen.bodyHash !== bodyHash) return evoError(409, 'idempotency_conflict', 'This Idempotency-Key was used with another request body.', 'invalid_request_error');
      if (seen) return { status: 200, json: taskObject(tasks.get(seen.taskId)!) };
    }
    const scenario = scenarioOf(req.body?.prompt, server.scenarios);
    if (scenario === 'bad_auth') return unauthorizedAnswer();
    const fault = SUBMIT_FAULTS[scenario];
    if (fault) return fault();
    const checked = validateCreate(req.body, opts.defaultN ?? 1);
    if ('status' in checked) return checked;
    for (const fetched of await server.fetchInputs(req.body.image_urls ?? [])) {
      if (fetched.status !== 200) return badParam('image_urls', `could not download ${fetched.url} (${fetched.status ?? fetched.error})`);
    }
    const now = server.clock.now();
    const id = `task-unified-${Math.floor(now / 1000)}-${randomInt(36 ** 8)
      .toString(36)
      .padStart(8, '0')}`;
    const task: FakeEvolinkTask = {
      id,
      model: req.body.model,
      body: req.body,
      scenario,
      createdAtMs: now,
      n: checked.n,
      width: checked.width,
      height: checked.height,
      idempotencyKey: key,
    };
    tasks.set(id, task);
    if (key) byKey.set(key, { bodyHash, taskId: id });
    return { status: 200, json: taskObject(task) };
  }

  function get(req: RecordedRequest, [rawId]: string[]): FakeResponse {
    if (req.headers.authorization !== `Bearer ${apiKey}` || server.scenarios.peek() === 'bad_auth') return unauthorizedAnswer();
    const id = decodeURIComponent(rawId!);
    if (!id.startsWith('task-')) return evoError(400, 'invalid_task_id', `Invalid task id ${id}.`, 'invalid_request_error', 'task_id');
    const task = tasks.get(id);
    if (!task || task.scenario === 'task_lost') return evoError(404, 'task_not_found', `Task ${id} not found.`, 'invalid_request_error');
    return { status: 200, json: taskObject(task) };
  }

  server = await createFakeServer({
    ...opts,
    routes: [
      { method: 'POST', path: '/v1/images/generations', handle: create },
      { method: 'GET', path: /^\/v1\/tasks\/([^/]+)$/, handle: get },
    ],
    fallback: () => evoError(404, 'not_found', 'Not found.', 'invalid_request_error'),
  });

  return {
    baseUrl: server.baseUrl,
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
