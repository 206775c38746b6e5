/**
 * Everything Jimeng-specific that rests on one source, conflicting sources or a guess
 * (docs/providers.md §2, tags [S]/[C]/[U]): req_keys, limits, parameter mappings, the status map, the
 * error-code table and the poll cadence. Adjust here when the vendor's behaviour turns out
 * different; the adapter (jimeng.ts) holds only the protocol.
 */
import { ERR } from '../../lib/error-codes.ts';
import { JIMENG_BUSY_50430_MS } from '../../lib/retry-ladders.ts';
import type { TaskStatus } from '../engine.ts';
import type { Capability, UpscaleResolution } from '../../contract/index.ts';
import { classifyCommonStatus, statusFromTable, twoSpeedPollDelayMs, type Fault } from './common.ts';

export const JIMENG_API_VERSION = '2022-08-31';
export const JIMENG_SERVICE = 'cv';
export const SUBMIT_ACTION = 'CVSync2AsyncSubmitTask';
export const RESULT_ACTION = 'CVSync2AsyncGetResult';
/** Success ⇔ `code == 10000`, whatever the HTTP status. */
export const SUCCESS_CODE = 10000;

export const JIMENG_CAPABILITIES = ['image.generate', 'image.inpaint', 'image.upscale'] as const satisfies readonly Capability[];

/** image.generate's req_key comes from config (4.0 or 4.6); the others are fixed. */
const INPAINT_REQ_KEY = 'jimeng_image2image_dream_inpaint'; // medium confidence
const UPSCALE_REQ_KEY = 'jimeng_i2i_seed3_tilesr_cvtob'; // medium-low: official page unseen

export function reqKeyFor(capability: Capability, imageReqKey: string): string {
  if (capability === 'image.inpaint') return INPAINT_REQ_KEY;
  if (capability === 'image.upscale') return UPSCALE_REQ_KEY;
  return imageReqKey;
}

// ---------------------------------------------------------------------------------------------
// image.generate

/** How a generate model takes `scale` and how many reference images it accepts. */
interface GenerateModel {
  scale: 'fraction' | 'integer';
  maxReferenceImages: number;
}

const GENERATE_MODELS: Record<string, GenerateModel> = {
  jimeng_t2i_v40: { scale: 'fraction', maxReferenceImages: 10 },
  jimeng_seedream46_cvtob: { scale: 'integer', maxReferenceImages: 14 },
};
/** An unlisted req_key is treated as 4.0, the documented default. */
const DEFAULT_GENERATE_MODEL = GENERATE_MODELS.jimeng_t2i_v40!;

export function generateModelOf(reqKey: string): GenerateModel {
  return GENERATE_MODELS[reqKey] ?? DEFAULT_GENERATE_MODEL;
}

/** [ours] Longer prompts are refused rather than truncated (800 is the advised maximum). */
export const MAX_PROMPT_CHARS = 800;

/**
 * Our `scale` (0–100, text weight against references) in the model's unit: 4.0 takes a fraction
 * 0–1 with two decimals, 4.6 an integer 1–100. Absent → omitted (provider default 0.5 / 50).
 */
export function mapScale(reqKey: string, scale: number | undefined): number | undefined {
  if (scale === undefined) return undefined;
  const whole = Math.min(100, Math.max(0, Math.round(scale)));
  return generateModelOf(reqKey).scale === 'fraction' ? whole / 100 : Math.max(1, whole);
}

const MIN_AREA = 1024 * 1024; // 1048576
const MAX_AREA = 4096 * 4096; // 16777216
/** Ratio bounds the provider applies unless `min_ratio`/`max_ratio` widen them. */
const DEFAULT_MIN_RATIO = 1 / 3;
const DEFAULT_MAX_RATIO = 3;
/** `min_ratio`/`max_ratio` may be set within [1/16, 16). */
const LIMIT_MIN_RATIO = 1 / 16;
const LIMIT_MAX_RATIO = 16;

export interface FittedSize {
  width: number;
  height: number;
  /** Sent only when the ratio falls outside the default [1/3, 3]. */
  minRatio?: number;
  maxRatio?: number;
}

/**
 * [ours] Scales width and height by one factor so the area lands in [MIN_AREA, MAX_AREA],
 * rounding towards the inside of the range; the worker resizes the result (cover) back to the
 * asked size. Returns null for ratios the provider cannot produce at all.
 */
export function fitSize(width: number, height: number): FittedSize | null {
  const ratio = width / height;
  if (!(ratio >= LIMIT_MIN_RATIO && ratio < LIMIT_MAX_RATIO)) return null;
  let fitted = { width, height };
  const area = width * height;
  if (area < MIN_AREA) {
    const factor = Math.sqrt(MIN_AREA / area);
    fitted = { width: Math.ceil(width * factor), height: Math.ceil(height * factor) };
  } else if (area > MAX_AREA) {
    const factor = Math.sqrt(MAX_AREA / area);
    fitted = { width: Math.floor(width * factor), height: Math.floor(height * factor) };
  }
  const fittedRatio = fitted.width / fitted.height;
  if (fittedRatio >= DEFAULT_MIN_RATIO && fittedRatio <= DEFAULT_MAX_RATIO) return fitted;
  // Widen the bounds just past the ratio (4 decimals, rounded outwards) so float noise never rejects it.
  return {
    ...fitted,
    minRatio: Math.max(LIMIT_MIN_RATIO, Math.min(DEFAULT_MIN_RATIO, Math.floor(fittedRatio * 1e4) / 1e4)),
    maxRatio: Math.min(LIMIT_MAX_RATIO - 1e-4, Math.max(DEFAULT_MAX_RATIO, Math.ceil(fittedRatio * 1e4) / 1e4)),
  };
}

// ---------------------------------------------------------------------------------------------
// image.inpaint / image.upscale inputs

/** Inputs sent as base64 (inpaint, upscale): JPEG/PNG, at most 4.7 MB and 4096 px a side. */
export const MAX_BASE64_INPUT_BYTES = 4.7 * 1024 * 1024;
export const MAX_INPUT_SIDE = 4096;
/** Upscale inputs must lie within 1:3–3:1. */
export const UPSCALE_MAX_RATIO = 3;

/**
 * `resolution` per our upscale resolution. The provider has no 2k: ask for 4k and let the worker
 * downscale to the 2048 long side it applies to every upscale output anyway.
 */
export const UPSCALE_RESOLUTION: Record<UpscaleResolution, '4k' | '8k'> = { '2k': '4k', '4k': '4k', '8k': '8k' };
export const DEFAULT_UPSCALE_RESOLUTION: UpscaleResolution = '4k';

// ---------------------------------------------------------------------------------------------
// Polling

/** Poll body `req_json`: a JSON-encoded string asking for 24 h URLs instead of base64. */
export const RESULT_REQ_JSON = JSON.stringify({ return_url: true });

/** [ours] First poll 2 s after submit, then every 2.5 s: polls count against the account's QPS. */
export function jimengPollDelayMs(pollCount: number): number {
  return twoSpeedPollDelayMs(pollCount, { firstPolls: 1, firstMs: 2000, thenMs: 2500 });
}

/** Tasks are kept 12 h; a `not_found` for an older handle means it aged out, not that it was lost. */
export const TASK_RETENTION_MS = 12 * 60 * 60 * 1000;

/** `data.status` → ours. `done` and `not_found` need more than the word, so the adapter decides them. */
const STATUS_MAP: Record<string, TaskStatus> = {
  in_queue: 'queued',
  generating: 'running',
  done: 'succeeded',
  expired: 'expired',
};

/** Unknown words map to `running` (docs/providers.md §1.2): keep polling rather than fail on a new status. */
export function mapStatus(providerStatus: string): TaskStatus {
  return statusFromTable(STATUS_MAP, providerStatus);
}

// ---------------------------------------------------------------------------------------------
// Errors (§2.5)

export interface JimengFault extends Fault {
  /** When it ends a task at poll time: may be submitted again as a new (billed) task. */
  resubmittable?: boolean;
}

const CODE_TABLE: Record<number, JimengFault> = {
  // [ours] 50430: every concurrency slot is busy; waits JIMENG_BUSY_50430_MS (lib/retry-ladders.ts).
  // 50429 (QPS) takes the worker's default backoff.
  50429: { kind: 'rate_limited', code: ERR.rate_limited },
  50430: { kind: 'rate_limited', code: ERR.rate_limited, retryAfterMs: JIMENG_BUSY_50430_MS },
  // [C] the 4.0 page says not to retry internal errors; transient by nature, so we retry (bounded).
  50500: { kind: 'retryable', code: ERR.provider_error },
  50501: { kind: 'retryable', code: ERR.provider_error },
  // Input / output-text moderation: the same request fails the same way again.
  50411: { kind: 'permanent', code: ERR.content_moderation },
  50412: { kind: 'permanent', code: ERR.content_moderation },
  50413: { kind: 'permanent', code: ERR.content_moderation },
  50512: { kind: 'permanent', code: ERR.content_moderation },
  50518: { kind: 'permanent', code: ERR.content_moderation },
  // Output-image moderation: another sample may pass.
  50511: { kind: 'permanent', code: ERR.content_moderation, resubmittable: true },
  50519: { kind: 'permanent', code: ERR.content_moderation, resubmittable: true },
  // Moderation subsystem errors: the vendor says do not retry.
  50520: { kind: 'permanent', code: ERR.provider_error },
  50521: { kind: 'permanent', code: ERR.provider_error },
  50522: { kind: 'permanent', code: ERR.provider_error },
  // Service not enabled or wrong req_key: an operator problem, like bad credentials.
  50400: { kind: 'permanent', code: ERR.provider_auth },
  50204: { kind: 'permanent', code: ERR.provider_auth }, // [S] req_key not supported
  50215: { kind: 'permanent', code: ERR.invalid_input },
};

/** Gateway errors (`ResponseMetadata.Error.Code`, a string) that mean our credentials are wrong [U]. */
const AUTH_GATEWAY_CODE = /Signature|AccessKey|Credential|SecurityToken|Unauthori[sz]ed|AccessDenied/i;

/**
 * Classifies a non-success answer by its body code first (Volcengine puts the meaning there and
 * uses HTTP 400 for most of it), then by HTTP status for answers without a known code: gateway
 * errors and non-JSON pages included.
 */
export function classifyJimengError(httpStatus: number, providerCode: number | string | undefined): JimengFault {
  const known = typeof providerCode === 'number' ? CODE_TABLE[providerCode] : undefined;
  if (known) return known;
  if (typeof providerCode === 'string' && AUTH_GATEWAY_CODE.test(providerCode)) return { kind: 'permanent', code: ERR.provider_auth };
  return classifyCommonStatus(httpStatus) ?? { kind: 'permanent', code: ERR.provider_error };
}
