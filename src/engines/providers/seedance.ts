/**
 * Seedance video on Volcengine Ark (docs/providers.md §3): create a task, poll it, DELETE to cancel.
 * Every model fact, limit and code table lives in `seedance-mapping.ts`.
 */
import fsp from 'node:fs/promises';
import { EngineError, type EngineHandle, type PollResult, type RemoteEngine, type RemoteInput, type RemoteRequest } from '../engine.ts';
import { VIDEO_RATIOS } from '../../contract/index.ts';
import { systemClock } from '../../lib/clock.ts';
import { ERR } from '../../lib/error-codes.ts';
import { SEEDANCE_QUOTA, seedanceQuotaWaitMs } from '../../lib/retry-ladders.ts';
import {
  errorEnvelope,
  failedCallMessage,
  faultError,
  invalidInput as invalid,
  isNonEmptyString,
  isOk,
  missingTaskId,
  missingTaskObject,
  newHandle,
  taskLost,
  withoutQueries,
  type RemoteEngineConfig,
} from './common.ts';
import { callProvider, retryAfterMs, type ProviderResponse } from './http.ts';
import {
  classifyHttpStatus,
  classifySeedanceError,
  executionExpiresAfter,
  EXPIRY_GRACE_MS,
  imageProblem,
  imageRoles,
  mapSeedanceStatus,
  MAX_IMAGES,
  MAX_REFERENCE_AUDIOS,
  MAX_REFERENCE_VIDEOS,
  MODE_NAMES,
  resolutionAllowed,
  resolveRatio,
  SEEDANCE_ENGINE,
  seedanceModel,
  seedancePollDelayMs,
} from './seedance-mapping.ts';

/** `clock`: time for handles, the QuotaExceeded give-up and the local expiry check. */
export interface SeedanceConfig extends RemoteEngineConfig {
  /** Ends in `/api/v3`. */
  baseUrl: string;
  apiKey: string;
  videoModel: string;
  /** Sets `execution_expires_after` (at least 3600). */
  jobTimeoutSeconds: number;
}

export function createSeedanceEngine(config: SeedanceConfig): RemoteEngine {
  const clock = config.clock ?? systemClock;
  const tasksUrl = `${config.baseUrl.replace(/\/+$/, '')}/contents/generations/tasks`;
  const headers = { authorization: `Bearer ${config.apiKey}`, 'content-type': 'application/json' };
  const expiresAfterSeconds = executionExpiresAfter(config.jobTimeoutSeconds);
  // jobId → when QuotaExceeded was first seen on its submit and how often since, for SEEDANCE_QUOTA
  // (30 s → 5 min, give up after ~15 min). In memory: a restarted worker starts the ladder again.
  const quotaWaits = new Map<string, { firstAt: number; count: number }>();

  const call = (method: 'GET' | 'POST' | 'DELETE', url: string, signal?: AbortSignal, body?: unknown) =>
    callProvider(SEEDANCE_ENGINE, { method, url, headers, body: body === undefined ? undefined : JSON.stringify(body), timeoutMs: config.httpTimeoutMs, signal });

  function errorFrom(res: ProviderResponse, what: string, jobId?: string): EngineError {
    const envelope = errorEnvelope(res);
    // Ark's codes are strings (a number would be no code we know).
    const providerCode = typeof envelope.providerCode === 'string' ? envelope.providerCode : undefined;
    const message = failedCallMessage(SEEDANCE_ENGINE, what, res.status, providerCode || undefined, envelope.detail);
    const extra = { providerCode, httpStatus: res.status };
    const { kind, code } = classifySeedanceError(providerCode) ?? classifyHttpStatus(res.status);
    if (kind === 'quota_wait') return quotaError(message, extra, jobId);
    // No Retry-After is documented; without one the worker backs off (PROVIDER_RATE_LIMIT).
    return faultError({ kind, code, retryAfterMs: retryAfterMs(res.headers, clock.now()) }, message, extra);
  }

  function quotaError(message: string, extra: { providerCode?: string; httpStatus: number }, jobId?: string): EngineError {
    const now = clock.now();
    for (const [key, wait] of quotaWaits) if (now - wait.firstAt > SEEDANCE_QUOTA.forgetAfterMs) quotaWaits.delete(key);
    const wait = jobId ? (quotaWaits.get(jobId) ?? { firstAt: now, count: 0 }) : { firstAt: now, count: 0 };
    if (now - wait.firstAt >= SEEDANCE_QUOTA.giveUpAfterMs) {
      if (jobId) quotaWaits.delete(jobId);
      return new EngineError(ERR.quota_exceeded, `${message} (still refused after ${Math.round((now - wait.firstAt) / 60_000)} min)`, extra);
    }
    const delay = seedanceQuotaWaitMs(wait.count + 1);
    if (jobId) quotaWaits.set(jobId, { firstAt: wait.firstAt, count: wait.count + 1 });
    return new EngineError(ERR.quota_exceeded, message, { ...extra, rateLimited: true, retryAfterMs: delay });
  }

  async function createBody(request: RemoteRequest): Promise<Record<string, unknown>> {
    const model = seedanceModel(config.videoModel);
    const images = request.inputs.filter((i) => i.role === 'image');
    const videos = request.inputs.filter((i) => i.role === 'video');
    const audios = request.inputs.filter((i) => i.role === 'audio');
    if (request.inputs.some((i) => i.role === 'mask')) throw invalid('video.generate takes no mask.');
    const withMedia = videos.length + audios.length > 0;
    if (withMedia && !model.modes.includes('reference_media')) {
      throw invalid(`Reference video/audio needs a Seedance 2.0 model; ${config.videoModel} takes images only.`);
    }
    if (images.length > MAX_IMAGES) throw invalid(`Seedance takes at most ${MAX_IMAGES} images; got ${images.length}.`);
    if (videos.length > MAX_REFERENCE_VIDEOS) throw invalid(`Seedance takes at most ${MAX_REFERENCE_VIDEOS} reference videos.`);
    if (audios.length > MAX_REFERENCE_AUDIOS) throw invalid(`Seedance takes at most ${MAX_REFERENCE_AUDIOS} reference audio clips.`);
    if (!request.prompt && images.length === 0) throw invalid('video.generate needs a prompt or at least one image.');
    const { mode, roles } = imageRoles(images.length, withMedia);
    if (!model.modes.includes(mode)) throw invalid(`${config.videoModel} does not support ${MODE_NAMES[mode]}.`);
    for (const [i, image] of images.entries()) {
      const problem = imageProblem(image, await sizeOf(image));
      if (problem) throw invalid(`Image ${i + 1} ${problem}.`);
    }

    const settings = request.params.settings ?? { ratio: 'adaptive', duration: 5, resolution: '720p' };
    const { duration, resolution } = settings;
    if (!Number.isInteger(duration) || duration < model.minDurationSeconds || duration > model.maxDurationSeconds) {
      throw invalid(`${config.videoModel} makes ${model.minDurationSeconds}–${model.maxDurationSeconds} s videos; got duration ${duration}.`);
    }
    if (!VIDEO_RATIOS.includes(settings.ratio)) throw invalid(`Unknown ratio ${settings.ratio}.`);
    const ratio = resolveRatio(settings.ratio, mode, images[0]);
    if (!resolutionAllowed(model, resolution, mode)) {
      throw invalid(`${config.videoModel} cannot make ${resolution} video${mode.startsWith('reference') ? ' from references' : ''}.`);
    }

    // Labels such as @图片1 stay in the prompt as written; images follow in request order.
    const content: unknown[] = [];
    if (request.prompt) content.push({ type: 'text', text: request.prompt });
    images.forEach((image, i) => content.push({ type: 'image_url', image_url: { url: image.publicUrl }, role: roles[i] }));
    for (const video of videos) content.push({ type: 'video_url', video_url: { url: video.publicUrl }, role: 'reference_video' });
    for (const audio of audios) content.push({ type: 'audio_url', audio_url: { url: audio.publicUrl }, role: 'reference_audio' });
    return {
      model: config.videoModel,
      content,
      ratio,
      duration,
      resolution,
      watermark: false,
      execution_expires_after: expiresAfterSeconds,
      ...(model.generateAudio === undefined ? {} : { generate_audio: model.generateAudio }),
    };
  }

  function taskUrl(handle: EngineHandle): string {
    return `${tasksUrl}/${encodeURIComponent(handle.taskId)}`;
  }

  function toPollResult(task: any, handle: EngineHandle): PollResult {
    const providerStatus = typeof task?.status === 'string' ? task.status : '';
    const status = mapSeedanceStatus(providerStatus);
    switch (status) {
      case 'succeeded': {
        const url = task.content?.video_url;
        if (isNonEmptyString(url)) return { status, progress: 100, providerStatus, outputs: [{ kind: 'video', url }] };
        return { status: 'failed', progress: null, providerStatus, error: { code: ERR.provider_error, message: 'Seedance reported success without a video_url.' } };
      }
      case 'failed': {
        // `error` {code, message}; old list items carry `failure_reason` instead [C].
        const raw = task.error ?? task.failure_reason;
        const providerCode = typeof raw === 'string' ? raw : typeof raw?.code === 'string' ? raw.code : undefined;
        const detail = typeof raw?.message === 'string' ? withoutQueries(raw.message) : (providerCode ?? 'no reason given');
        const found = classifySeedanceError(providerCode);
        const error = {
          code: found?.code ?? ERR.provider_error,
          message: `Seedance task failed: ${detail}`,
          providerCode,
          resubmittable: found !== undefined && found.kind !== 'permanent',
        };
        return { status, progress: null, providerStatus, error };
      }
      case 'expired':
        return { status, progress: null, providerStatus, error: { code: ERR.provider_timeout, message: 'Seedance expired the task before it ran to the end.' } };
      case 'cancelled':
        return { status, progress: null, providerStatus };
      default: {
        const createdAtMs = typeof task.created_at === 'number' ? task.created_at * 1000 : Date.parse(handle.submittedAt);
        const expiresAfter = Number(handle.meta?.executionExpiresAfter ?? expiresAfterSeconds);
        if (clock.now() > createdAtMs + expiresAfter * 1000 + EXPIRY_GRACE_MS) {
          return {
            status: 'expired',
            progress: null,
            providerStatus,
            error: { code: ERR.provider_timeout, message: `Seedance task still ${providerStatus || 'pending'} past its ${expiresAfter} s expiry.` },
          };
        }
        return { status, progress: null, providerStatus };
      }
    }
  }

  return {
    kind: 'remote',
    name: SEEDANCE_ENGINE,
    capabilities: ['video.generate'],
    maxConcurrency: config.maxConcurrency,

    async submit(request, { signal }) {
      if (request.capability !== 'video.generate') throw invalid(`Seedance cannot run ${request.capability}.`);
      const body = await createBody(request);
      const res = await call('POST', tasksUrl, signal, body);
      if (!isOk(res)) throw errorFrom(res, 'create', request.jobId);
      quotaWaits.delete(request.jobId);
      const id = res.json?.id;
      if ((typeof id !== 'string' && typeof id !== 'number') || id === '') throw missingTaskId(SEEDANCE_ENGINE, res);
      return newHandle(SEEDANCE_ENGINE, String(id), clock, { model: config.videoModel, executionExpiresAfter: expiresAfterSeconds });
    },

    async poll(handle, { signal }) {
      const res = await call('GET', taskUrl(handle), signal);
      if (res.status === 404) {
        const providerCode = typeof res.json?.error?.code === 'string' ? res.json.error.code : undefined;
        return taskLost(`Seedance no longer knows task ${handle.taskId}.`, { providerCode });
      }
      if (!isOk(res)) throw errorFrom(res, 'get');
      if (!res.json || typeof res.json !== 'object') throw missingTaskObject(SEEDANCE_ENGINE, res);
      return toPollResult(res.json, handle);
    },

    async cancel(handle) {
      // DELETE also removes finished tasks, so its 200 alone does not say "cancelled": look first.
      const res = await call('GET', taskUrl(handle));
      if (res.status === 404) return 'too_late';
      if (!isOk(res)) throw errorFrom(res, 'get');
      const status = res.json?.status;
      if (status === 'cancelled') return 'cancelled';
      if (status !== 'queued') return 'too_late';
      const deleted = await call('DELETE', taskUrl(handle));
      if (isOk(deleted)) return 'cancelled';
      // Refused: it started running (or finished) since we looked.
      if (deleted.status === 400 || deleted.status === 404 || deleted.status === 409) return 'too_late';
      throw errorFrom(deleted, 'delete');
    },

    pollDelayMs(pollCount) {
      return config.pollIntervalMs ?? seedancePollDelayMs(pollCount);
    },
  };
}

async function sizeOf(input: RemoteInput): Promise<number> {
  // The worker hands us a file it already fetched; if it is somehow gone, let the provider judge.
  return fsp.stat(input.path).then(
    (s) => s.size,
    () => 0,
  );
}
