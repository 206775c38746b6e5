/**
 * Jimeng images on Volcengine Visual (docs/providers.md §2): image.generate, image.inpaint and
 * image.upscale as signed `CVSync2AsyncSubmitTask` / `CVSync2AsyncGetResult` calls. Everything
 * vendor-specific that may change (req_keys, limits, status and error tables) lives in
 * jimeng-mapping.ts.
 */
import { readFile } from 'node:fs/promises';
import sharp, { type Metadata } from 'sharp';
import { systemClock } from '../../lib/clock.ts';
import { ERR } from '../../lib/error-codes.ts';
import { DEFAULT_MAX_INPUT_PIXELS } from '../../media/probe.ts';
import { EngineError, type EngineHandle, type PollResult, type RemoteEngine, type RemoteInput, type RemoteRequest } from '../engine.ts';
import { throwIfAborted } from '../../lib/abort.ts';
import { faultError, invalidInput, newHandle, nonEmptyStrings, taskLost, type RemoteEngineConfig } from './common.ts';
import { callProvider, type ProviderResponse } from './http.ts';
import {
  classifyJimengError,
  DEFAULT_UPSCALE_RESOLUTION,
  fitSize,
  generateModelOf,
  JIMENG_API_VERSION,
  JIMENG_CAPABILITIES,
  JIMENG_SERVICE,
  jimengPollDelayMs,
  mapScale,
  mapStatus,
  MAX_BASE64_INPUT_BYTES,
  MAX_INPUT_SIDE,
  MAX_PROMPT_CHARS,
  reqKeyFor,
  RESULT_ACTION,
  RESULT_REQ_JSON,
  SUBMIT_ACTION,
  SUCCESS_CODE,
  TASK_RETENTION_MS,
  UPSCALE_MAX_RATIO,
  UPSCALE_RESOLUTION,
  type JimengFault,
} from './jimeng-mapping.ts';
import { signVolcRequest } from './volc-sign.ts';

const JIMENG_ENGINE = 'jimeng';

/** `clock`: time for handles and a task's age; request signing keeps the real clock (volc-sign.ts). */
export interface JimengConfig extends RemoteEngineConfig {
  baseUrl: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** STS session token, sent (and signed) as X-Security-Token. */
  securityToken?: string;
  region: string;
  /** image.generate's req_key: `jimeng_t2i_v40` (4.0) or `jimeng_seedream46_cvtob` (4.6). */
  imageReqKey: string;
  /**
   * ZHINIAN_MAX_INPUT_PIXELS: sharp's limitInputPixels when an input image is re-encoded for the
   * provider (the worker already checked every input's header). Default: sharp's own.
   */
  maxInputPixels?: number;
}

type Body = Record<string, unknown>;

export function createJimengEngine(config: JimengConfig): RemoteEngine {
  const base = new URL(config.baseUrl);
  // Sign exactly the host the HTTP client sends: default port dropped, others kept.
  const host = base.host;
  const path = `${base.pathname.replace(/\/+$/, '')}/`;
  const maxPixels = config.maxInputPixels ?? DEFAULT_MAX_INPUT_PIXELS;
  const clock = config.clock ?? systemClock;

  /** One signed call; the body is serialised once so the signed hash matches the bytes sent. */
  async function call(action: string, payload: Body, signal: AbortSignal): Promise<ProviderResponse> {
    const body = JSON.stringify(payload);
    const query = { Action: action, Version: JIMENG_API_VERSION };
    const headers = signVolcRequest({
      method: 'POST',
      host,
      path,
      query,
      headers: { 'Content-Type': 'application/json' },
      body,
      accessKeyId: config.accessKeyId,
      secretAccessKey: config.secretAccessKey,
      securityToken: config.securityToken,
      region: config.region,
      service: JIMENG_SERVICE,
    });
    const url = new URL(path, base);
    url.search = new URLSearchParams(query).toString();
    return callProvider(JIMENG_ENGINE, { method: 'POST', url: url.toString(), headers, body, timeoutMs: config.httpTimeoutMs, signal });
  }

  return {
    kind: 'remote',
    name: JIMENG_ENGINE,
    capabilities: JIMENG_CAPABILITIES,
    maxConcurrency: config.maxConcurrency,

    /**
     * One call, no retry here: Jimeng has no idempotency key, so every accepted submit is a task
     * (the caller retries a timed-out submit at most once). `idempotencyKey` is therefore unused.
     */
    async submit(request, { signal }) {
      const reqKey = reqKeyFor(request.capability, config.imageReqKey);
      const payload = await buildSubmitBody(request, reqKey, maxPixels);
      throwIfAborted(signal);
      const res = await call(SUBMIT_ACTION, payload, signal);
      if (!isSuccess(res)) throw engineErrorOf(res);
      const taskId = readTaskId(res);
      // Not retryable: the provider may have accepted (and will bill) a task we cannot poll.
      if (!taskId) throw new EngineError(ERR.provider_error, 'jimeng: submit succeeded without a task_id', { httpStatus: res.status });
      return newHandle(JIMENG_ENGINE, taskId, clock, { reqKey });
    },

    async poll(handle, { signal }) {
      const reqKey = typeof handle.meta?.reqKey === 'string' ? handle.meta.reqKey : config.imageReqKey;
      const res = await call(RESULT_ACTION, { req_key: reqKey, task_id: handle.taskId, req_json: RESULT_REQ_JSON }, signal);
      if (!isSuccess(res)) return failedPoll(res);
      return interpretResult(res.json.data ?? {}, handle, clock.now());
    },

    // No cancel for image tasks (CVCancelTask is not documented for them): the provider still
    // runs and bills the task; the worker cancels locally and stops polling.
    async cancel() {
      return 'not_supported';
    },

    pollDelayMs(pollCount) {
      return config.pollIntervalMs ?? jimengPollDelayMs(pollCount);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Submit bodies (§2.3)

async function buildSubmitBody(request: RemoteRequest, reqKey: string, maxPixels: number): Promise<Body> {
  switch (request.capability) {
    case 'image.generate':
      return generateBody(request, reqKey);
    case 'image.inpaint':
      return inpaintBody(request, reqKey, maxPixels);
    case 'image.upscale':
      return upscaleBody(request, reqKey, maxPixels);
    default:
      throw invalidInput(`jimeng does not support ${request.capability}`);
  }
}

function generateBody(request: RemoteRequest, reqKey: string): Body {
  const prompt = requirePrompt(request);
  if (prompt.length > MAX_PROMPT_CHARS) throw invalidInput(`prompt is longer than ${MAX_PROMPT_CHARS} characters, the most Jimeng takes`);
  const { params } = request;
  const body: Body = { req_key: reqKey, prompt };
  if (params.width !== undefined && params.height !== undefined) {
    const size = fitSize(params.width, params.height);
    if (!size) throw invalidInput('width/height: Jimeng makes aspect ratios from 1:16 to 16:1 only');
    body.width = size.width;
    body.height = size.height;
    if (size.minRatio !== undefined) body.min_ratio = size.minRatio;
    if (size.maxRatio !== undefined) body.max_ratio = size.maxRatio;
  }
  const scale = mapScale(reqKey, params.scale);
  if (scale !== undefined) body.scale = scale;
  if (params.force_single !== undefined) body.force_single = params.force_single;
  // Reference images go by URL: the provider fetches our signed, keyless publicUrl itself.
  const references = request.inputs.filter((input) => input.role === 'image').map((input) => input.publicUrl);
  const { maxReferenceImages } = generateModelOf(reqKey);
  if (references.length > maxReferenceImages) throw invalidInput(`Jimeng takes at most ${maxReferenceImages} reference images`);
  if (references.length > 0) body.image_urls = references;
  return body;
}

async function inpaintBody(request: RemoteRequest, reqKey: string, maxPixels: number): Promise<Body> {
  const prompt = requirePrompt(request);
  const images = request.inputs.filter((input) => input.role === 'image');
  const original = images[0];
  const mask = request.inputs.find((input) => input.role === 'mask') ?? images[1];
  if (!original || !mask) throw invalidInput('image.inpaint needs the original image and a mask');
  const prepared = await prepareImage(original, 'original image', { shrinkToFit: false, maxPixels });
  const maskPng = await normaliseMask(mask, prepared.width, prepared.height, maxPixels);
  return { req_key: reqKey, prompt, binary_data_base64: [prepared.bytes.toString('base64'), maskPng.toString('base64')] };
}

async function upscaleBody(request: RemoteRequest, reqKey: string, maxPixels: number): Promise<Body> {
  const input = request.inputs.find((i) => i.role === 'image');
  if (!input) throw invalidInput('image.upscale needs one input image');
  // The provider has no 2k: ask for 4k; the worker downscales every upscale output to its long side.
  const resolution = UPSCALE_RESOLUTION[request.params.resolution ?? DEFAULT_UPSCALE_RESOLUTION];
  const prepared = await prepareImage(input, 'input image', { shrinkToFit: true, maxPixels });
  const ratio = prepared.width / prepared.height;
  if (ratio > UPSCALE_MAX_RATIO || ratio < 1 / UPSCALE_MAX_RATIO) throw invalidInput('Jimeng upscales images between 1:3 and 3:1 only');
  return { req_key: reqKey, binary_data_base64: [prepared.bytes.toString('base64')], resolution };
}

function requirePrompt(request: RemoteRequest): string {
  if (!request.prompt) throw invalidInput(`${request.capability} on jimeng needs a prompt`);
  return request.prompt;
}

interface PreparedImage {
  bytes: Buffer;
  width: number;
  height: number;
}

/**
 * The image as the provider will read it: JPEG/PNG, upright, ≤4096 px a side, ≤4.7 MB. A file
 * that already qualifies is sent byte for byte; others are re-encoded (PNG, or JPEG when the PNG
 * is too big). Only an upscale input may be shrunk: its output is resized by the worker anyway,
 * whereas a shrunk inpaint original would come back smaller than the user's image. `maxPixels`:
 * the pixel limit, checked on the header and kept as sharp's limitInputPixels when re-encoding.
 */
async function prepareImage(input: RemoteInput, what: string, opts: { shrinkToFit: boolean; maxPixels: number }): Promise<PreparedImage> {
  let meta: Metadata;
  try {
    // Header only: no pixels are decoded, so the size can be read even when it is over the limit.
    meta = await sharp(input.path, { limitInputPixels: false }).metadata();
  } catch (error) {
    throw invalidInput(`the ${what} is not a readable image (${(error as Error).message})`);
  }
  const width = meta.autoOrient?.width ?? meta.width ?? 0;
  const height = meta.autoOrient?.height ?? meta.height ?? 0;
  if (width * height > opts.maxPixels) {
    throw new EngineError(ERR.input_too_large, `the ${what} is ${width}×${height} = ${width * height} pixels, over the ${opts.maxPixels}-pixel limit (ZHINIAN_MAX_INPUT_PIXELS)`);
  }
  const upright = !meta.orientation || meta.orientation === 1;
  const fitsSide = Math.max(width, height) <= MAX_INPUT_SIDE;
  if (!fitsSide && !opts.shrinkToFit) throw invalidInput(`the ${what} is larger than ${MAX_INPUT_SIDE} px on a side, the most Jimeng takes`);
  if ((meta.format === 'jpeg' || meta.format === 'png') && upright && fitsSide) {
    const bytes = await readFile(input.path);
    if (bytes.length <= MAX_BASE64_INPUT_BYTES) return { bytes, width, height };
  }
  const pipeline = sharp(input.path, { limitInputPixels: opts.maxPixels }).rotate().resize(MAX_INPUT_SIDE, MAX_INPUT_SIDE, { fit: 'inside', withoutEnlargement: true });
  const png = await pipeline.clone().png().toBuffer({ resolveWithObject: true });
  if (png.data.length <= MAX_BASE64_INPUT_BYTES) return { bytes: png.data, width: png.info.width, height: png.info.height };
  const jpeg = await pipeline.clone().flatten({ background: '#ffffff' }).jpeg({ quality: 90 }).toBuffer({ resolveWithObject: true });
  if (jpeg.data.length <= MAX_BASE64_INPUT_BYTES) return { bytes: jpeg.data, width: jpeg.info.width, height: jpeg.info.height };
  throw invalidInput(`the ${what} does not fit Jimeng's 4.7 MB input limit`);
}

/**
 * The mask as Jimeng wants it: single-channel grey PNG of the original's size, 0 keep / 255
 * repaint. Same rule as the local engine: alpha flattened onto black, ≥128 → repaint.
 */
async function normaliseMask(mask: RemoteInput, width: number, height: number, maxPixels: number): Promise<Buffer> {
  try {
    return await sharp(mask.path, { limitInputPixels: maxPixels })
      .rotate()
      .flatten({ background: '#000000' })
      .greyscale()
      .resize(width, height, { fit: 'fill', kernel: 'nearest' })
      .threshold(128)
      .toColourspace('b-w')
      .png()
      .toBuffer();
  } catch (error) {
    throw invalidInput(`the mask is not a readable image (${(error as Error).message})`);
  }
}

// ---------------------------------------------------------------------------------------------
// Answers

function isSuccess(res: ProviderResponse): boolean {
  return res.json?.code === SUCCESS_CODE;
}

/**
 * The task id exactly as sent. It is documented as a string, but ~19 digits exceed 2^53, so if
 * it ever arrives as a JSON number it is read from the raw text instead of the parsed value.
 */
function readTaskId(res: ProviderResponse): string | null {
  const parsed = res.json?.data?.task_id;
  if (typeof parsed === 'string' && parsed) return parsed;
  const raw = /"task_id"\s*:\s*(\d+)/.exec(res.text);
  return raw ? raw[1]! : null;
}

interface ProviderFault {
  fault: JimengFault;
  providerCode?: number | string;
  message: string;
}

/** What went wrong, from the envelope (`code`, `message`) or the gateway's `ResponseMetadata.Error`. */
function faultOf(res: ProviderResponse): ProviderFault {
  const json = res.json;
  const gatewayError = json?.ResponseMetadata?.Error;
  const providerCode: number | string | undefined = typeof json?.code === 'number' ? json.code : typeof gatewayError?.Code === 'string' ? gatewayError.Code : undefined;
  const detail: string = json?.message ?? gatewayError?.Message ?? (res.text.slice(0, 200) || 'no body');
  const fault = classifyJimengError(res.status, providerCode);
  const codeText = providerCode === undefined ? '' : ` ${providerCode}`;
  return { fault, providerCode, message: `jimeng: HTTP ${res.status}${codeText}: ${detail}` };
}

function engineErrorOf(res: ProviderResponse): EngineError {
  const { fault, providerCode, message } = faultOf(res);
  return faultError(fault, message, { providerCode, httpStatus: res.status });
}

/**
 * A poll answered with an error code: rate limits, server errors and auth trouble are the call's
 * (throw, the worker retries or fails the job); anything else — moderation of the result above
 * all — ended the task.
 */
function failedPoll(res: ProviderResponse): PollResult {
  const { fault, providerCode, message } = faultOf(res);
  if (fault.kind !== 'permanent' || fault.code === ERR.provider_auth) throw engineErrorOf(res);
  return {
    status: 'failed',
    progress: null,
    providerStatus: String(providerCode ?? res.status),
    error: { code: fault.code, message, providerCode, ...(fault.resubmittable ? { resubmittable: true } : {}) },
  };
}

function interpretResult(data: any, handle: EngineHandle, now: number): PollResult {
  const providerStatus = typeof data.status === 'string' ? data.status : 'unknown';
  if (providerStatus === 'not_found') return notFoundResult(handle, now);
  const status = mapStatus(providerStatus);
  if (status === 'succeeded') return doneResult(data);
  if (status === 'expired') {
    return { status, progress: null, providerStatus, error: { code: ERR.provider_timeout, message: 'jimeng: the task expired at the provider' } };
  }
  return { status, progress: null, providerStatus };
}

function doneResult(data: any): PollResult {
  // URLs when the answer has a list of them (asked for with return_url), else base64.
  const outputs: NonNullable<PollResult['outputs']> =
    Array.isArray(data.image_urls) && data.image_urls.length > 0
      ? nonEmptyStrings(data.image_urls).map((url) => ({ kind: 'image', url }))
      : nonEmptyStrings(data.binary_data_base64).map((b64) => ({ kind: 'image', data: Buffer.from(b64, 'base64') }));
  if (outputs.length === 0) {
    return { status: 'failed', progress: null, providerStatus: 'done', error: { code: ERR.provider_error, message: 'jimeng: task done without images' } };
  }
  return { status: 'succeeded', progress: 100, providerStatus: 'done', outputs };
}

/** Jimeng forgets tasks after 12 h: past that, `not_found` means we came too late. */
function notFoundResult(handle: EngineHandle, now: number): PollResult {
  const ageMs = now - Date.parse(handle.submittedAt);
  if (ageMs >= TASK_RETENTION_MS) {
    return { status: 'expired', progress: null, providerStatus: 'not_found', error: { code: ERR.provider_task_lost, message: 'jimeng: task older than 12 h is no longer kept' } };
  }
  return taskLost('jimeng: the provider does not know this task');
}
