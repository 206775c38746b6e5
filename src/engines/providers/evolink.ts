/**
 * Images through the EvoLink aggregator (docs/providers.md §4): create a task with an
 * Idempotency-Key, poll it. No cancel endpoint. Model forms and code tables live in
 * `evolink-mapping.ts`.
 */
import fsp from 'node:fs/promises';
import { EngineError, type EngineHandle, type PollResult, type RemoteEngine, type RemoteRequest } from '../engine.ts';
import { systemClock, type Clock } from '../../lib/clock.ts';
import { ERR } from '../../lib/error-codes.ts';
import { callProvider, retryAfterMs, type ProviderResponse } from './http.ts';
import {
  CANCELLED_CODE,
  classifyEvolinkHttp,
  classifyTaskError,
  EVOLINK_ENGINE,
  evolinkPollDelayMs,
  evolinkQuality,
  evolinkSize,
  mapEvolinkStatus,
  MAX_REFERENCE_BYTES,
  MAX_REFERENCE_IMAGES,
  REFERENCE_MIME_TYPES,
} from './evolink-mapping.ts';

export interface EvolinkConfig {
  baseUrl: string;
  apiKey: string;
  imageModel: string;
  httpTimeoutMs: number;
  /** A fixed poll interval (tests); else 3 s, then 10 s. */
  pollIntervalMs?: number;
  maxConcurrency: number;
  clock?: Clock;
}

function invalid(message: string): EngineError {
  return new EngineError(ERR.invalid_input, message);
}

export function createEvolinkEngine(config: EvolinkConfig): RemoteEngine {
  const clock = config.clock ?? systemClock;
  const base = config.baseUrl.replace(/\/+$/, '');
  const auth = { authorization: `Bearer ${config.apiKey}` };

  function errorFrom(res: ProviderResponse, what: string): EngineError {
    const err = res.json?.error;
    const providerCode = typeof err?.code === 'string' || typeof err?.code === 'number' ? err.code : undefined;
    const detail = withoutQueries(typeof err?.message === 'string' ? err.message : res.text.slice(0, 200));
    const message = `evolink ${what}: HTTP ${res.status}${providerCode !== undefined ? ` ${providerCode}` : ''}: ${detail}`.trim();
    const extra = { providerCode, httpStatus: res.status };
    const { kind, code } = classifyEvolinkHttp(res.status, [providerCode, err?.type].filter(Boolean).join(' ') || undefined);
    if (kind === 'rate_limited') return new EngineError(code, message, { ...extra, rateLimited: true, retryAfterMs: retryAfterMs(res.headers, clock.now()) });
    if (kind === 'retryable') return new EngineError(code, message, { ...extra, retryable: true });
    return new EngineError(code, message, extra);
  }

  async function createBody(request: RemoteRequest): Promise<Record<string, unknown>> {
    const model = config.imageModel;
    if (!request.prompt) throw invalid('EvoLink needs a prompt.');
    const images = request.inputs.filter((i) => i.role === 'image');
    if (images.length !== request.inputs.length) throw invalid('EvoLink takes reference images only (no mask, video or audio).');
    if (images.length > MAX_REFERENCE_IMAGES) throw invalid(`EvoLink takes at most ${MAX_REFERENCE_IMAGES} reference images; got ${images.length}.`);
    for (const [i, image] of images.entries()) {
      if (!REFERENCE_MIME_TYPES.includes(image.mimeType)) throw invalid(`Reference image ${i + 1} is ${image.mimeType}; EvoLink takes JPEG, PNG or WebP.`);
      const bytes = await fsp.stat(image.path).then((s) => s.size, () => 0);
      if (bytes > MAX_REFERENCE_BYTES) throw invalid(`Reference image ${i + 1} is larger than ${MAX_REFERENCE_BYTES / 1024 / 1024} MB.`);
    }
    const { width = 1024, height = 1024, quality, force_single } = request.params;
    const body: Record<string, unknown> = { model, prompt: request.prompt, size: evolinkSize(model, width, height) };
    const sentQuality = evolinkQuality(model, quality);
    if (sentQuality) body.quality = sentQuality;
    // Pre-charged per `n`: one image unless asked, the provider's default otherwise.
    if (force_single) body.n = 1;
    if (images.length > 0) body.image_urls = images.map((i) => i.publicUrl);
    return body;
  }

  function toPollResult(task: any): PollResult {
    const providerStatus = typeof task?.status === 'string' ? task.status : '';
    const { status, progress } = mapEvolinkStatus(providerStatus, task?.progress);
    if (status === 'succeeded') {
      const urls = resultUrls(task);
      if (urls.length > 0) return { status, progress, providerStatus, outputs: urls.map((url) => ({ kind: 'image' as const, url })) };
      return { status: 'failed', progress: null, providerStatus, error: { code: ERR.provider_error, message: 'EvoLink completed the task without results.' } };
    }
    if (status === 'failed') {
      const providerCode = typeof task.error?.code === 'string' || typeof task.error?.code === 'number' ? task.error.code : undefined;
      const detail = typeof task.error?.message === 'string' ? withoutQueries(task.error.message) : String(providerCode ?? 'no reason given');
      if (providerCode === CANCELLED_CODE) return { status: 'cancelled', progress, providerStatus };
      const { code, resubmittable } = classifyTaskError(providerCode === undefined ? undefined : String(providerCode));
      return { status, progress, providerStatus, error: { code, message: `EvoLink task failed: ${detail}`, providerCode, resubmittable } };
    }
    return { status, progress, providerStatus };
  }

  return {
    kind: 'remote',
    name: EVOLINK_ENGINE,
    capabilities: ['image.generate'],
    maxConcurrency: config.maxConcurrency,

    async submit(request, { signal, idempotencyKey }) {
      if (request.capability !== 'image.generate') throw invalid(`EvoLink cannot run ${request.capability}.`);
      const body = await createBody(request);
      // Every POST is a new billed task; the key lets a retried POST find the first one.
      const res = await callProvider(EVOLINK_ENGINE, {
        method: 'POST',
        url: `${base}/v1/images/generations`,
        headers: { ...auth, 'content-type': 'application/json', 'idempotency-key': idempotencyKey },
        body: JSON.stringify(body),
        timeoutMs: config.httpTimeoutMs,
        signal,
      });
      if (res.status < 200 || res.status >= 300) throw errorFrom(res, 'create');
      const id = res.json?.id;
      if (typeof id !== 'string' || id === '') {
        throw new EngineError(ERR.provider_error, `evolink create: HTTP ${res.status} without a task id`, { httpStatus: res.status });
      }
      return { engine: EVOLINK_ENGINE, taskId: id, submittedAt: new Date(clock.now()).toISOString(), meta: { model: config.imageModel } };
    },

    async poll(handle: EngineHandle, { signal }) {
      const res = await callProvider(EVOLINK_ENGINE, {
        method: 'GET',
        url: `${base}/v1/tasks/${encodeURIComponent(handle.taskId)}`,
        headers: auth,
        timeoutMs: config.httpTimeoutMs,
        signal,
      });
      // Unknown (404) or malformed (400 invalid_task_id) id: the task is gone for us.
      if (res.status === 404 || (res.status === 400 && res.json?.error?.code === 'invalid_task_id')) {
        return { status: 'failed', progress: null, providerStatus: 'not_found', error: { code: ERR.provider_task_lost, message: `EvoLink does not know task ${handle.taskId}.`, providerCode: res.json?.error?.code } };
      }
      if (res.status < 200 || res.status >= 300) throw errorFrom(res, 'get');
      if (!res.json || typeof res.json !== 'object') throw new EngineError(ERR.provider_error, `evolink get: HTTP ${res.status} without a task object`, { retryable: true, httpStatus: res.status });
      return toPollResult(res.json);
    },

    async cancel() {
      // No cancel endpoint (despite `task_info.can_cancel`): the job is cancelled locally, the task may still bill.
      return 'not_supported';
    },

    pollDelayMs(pollCount) {
      return config.pollIntervalMs ?? evolinkPollDelayMs(pollCount);
    },
  };
}

/** `results` (URL strings), falling back on `result_data[].image_url` [S]. */
function resultUrls(task: any): string[] {
  const results = Array.isArray(task.results) ? task.results.filter((u: unknown) => typeof u === 'string' && u) : [];
  if (results.length > 0) return results;
  const data = Array.isArray(task.result_data) ? task.result_data : [];
  return data.map((d: any) => d?.image_url ?? d?.url).filter((u: unknown): u is string => typeof u === 'string' && u !== '');
}

/** Provider messages may echo a signed input URL: keep its signature out of job errors and logs. */
function withoutQueries(text: string): string {
  return text.replace(/(https?:\/\/[^\s?#"']+)\?[^\s"']*/g, '$1?…');
}
