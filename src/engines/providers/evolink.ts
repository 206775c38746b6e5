/**
 * Images through the EvoLink aggregator (docs/providers.md §4): create a task with an
 * Idempotency-Key, poll it. No cancel endpoint. Model forms and code tables live in
 * `evolink-mapping.ts`.
 */
import fsp from 'node:fs/promises';
import type { EngineError, EngineHandle, PollResult, RemoteEngine, RemoteRequest } from '../engine.ts';
import { systemClock } from '../../lib/clock.ts';
import { ERR } from '../../lib/error-codes.ts';
import {
  errorEnvelope,
  failedCallMessage,
  faultError,
  invalidInput as invalid,
  isOk,
  missingTaskId,
  missingTaskObject,
  newHandle,
  nonEmptyStrings,
  taskLost,
  withoutQueries,
  type RemoteEngineConfig,
} from './common.ts';
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

export interface EvolinkConfig extends RemoteEngineConfig {
  baseUrl: string;
  apiKey: string;
  imageModel: string;
}

export function createEvolinkEngine(config: EvolinkConfig): RemoteEngine {
  const clock = config.clock ?? systemClock;
  const base = config.baseUrl.replace(/\/+$/, '');
  const auth = { authorization: `Bearer ${config.apiKey}` };

  function errorFrom(res: ProviderResponse, what: string): EngineError {
    const { providerCode, detail } = errorEnvelope(res);
    const message = failedCallMessage(EVOLINK_ENGINE, what, res.status, providerCode, detail);
    // Moderation may be named by the code or by `error.type`.
    const { kind, code } = classifyEvolinkHttp(res.status, [providerCode, res.json?.error?.type].filter(Boolean).join(' ') || undefined);
    return faultError({ kind, code, retryAfterMs: retryAfterMs(res.headers, clock.now()) }, message, { providerCode, httpStatus: res.status });
  }

  async function createBody(request: RemoteRequest): Promise<Record<string, unknown>> {
    const model = config.imageModel;
    if (!request.prompt) throw invalid('EvoLink needs a prompt.');
    const images = request.inputs.filter((i) => i.role === 'image');
    if (images.length !== request.inputs.length) throw invalid('EvoLink takes reference images only (no mask, video or audio).');
    if (images.length > MAX_REFERENCE_IMAGES) throw invalid(`EvoLink takes at most ${MAX_REFERENCE_IMAGES} reference images; got ${images.length}.`);
    for (const [i, image] of images.entries()) {
      if (!REFERENCE_MIME_TYPES.includes(image.mimeType)) throw invalid(`Reference image ${i + 1} is ${image.mimeType}; EvoLink takes JPEG, PNG or WebP.`);
      const bytes = await fsp.stat(image.path).then(
        (s) => s.size,
        () => 0,
      );
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
      if (!isOk(res)) throw errorFrom(res, 'create');
      const id = res.json?.id;
      if (typeof id !== 'string' || id === '') throw missingTaskId(EVOLINK_ENGINE, res);
      return newHandle(EVOLINK_ENGINE, id, clock, { model: config.imageModel });
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
        return taskLost(`EvoLink does not know task ${handle.taskId}.`, { providerCode: res.json?.error?.code });
      }
      if (!isOk(res)) throw errorFrom(res, 'get');
      if (!res.json || typeof res.json !== 'object') throw missingTaskObject(EVOLINK_ENGINE, res);
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
  const results = nonEmptyStrings(task.results);
  if (results.length > 0) return results;
  const data = Array.isArray(task.result_data) ? task.result_data : [];
  return nonEmptyStrings(data.map((d: any) => d?.image_url ?? d?.url));
}
