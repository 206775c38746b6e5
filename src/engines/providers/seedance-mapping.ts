/**
 * Every Seedance (Volcengine Ark) fact tagged [S], [C] or [U] in docs/providers.md §3, in one place
 * so it can be adjusted without touching the adapter: models, modes and limits, image roles,
 * ratio/resolution rules, status and error maps, poll cadence. The QuotaExceeded wait ladder is
 * SEEDANCE_QUOTA in lib/retry-ladders.ts, with every other ladder.
 */
import { ERR, type JobErrorCode } from '../../lib/error-codes.ts';
import type { RemoteInput, TaskStatus } from '../engine.ts';
import type { VideoRatio, VideoResolution } from '../../contract/index.ts';
import { classifyCommonStatus, statusFromTable, twoSpeedPollDelayMs, type FaultKind } from './common.ts';

export const SEEDANCE_ENGINE = 'seedance';

export type SeedanceMode = 'text' | 'first_frame' | 'first_last' | 'reference' | 'reference_media';

export interface SeedanceModel {
  /** Model id without its date suffix (`doubao-seedance-1-0-pro`); ids are matched by this prefix. */
  family: string;
  modes: readonly SeedanceMode[];
  minDurationSeconds: number;
  maxDurationSeconds: number;
  /** `duration: -1` lets the model pick (1.5 pro, 2.0). Our API never sends it (4–15 only). */
  autoDuration: boolean;
  resolutions: readonly VideoResolution[];
  /** The provider's own default; ours (720p) is always sent explicitly. */
  defaultResolution: VideoResolution;
  /** `generate_audio` is sent only to models that know it; their default `true` [C] is set explicitly. */
  generateAudio?: boolean;
}

const ALL_RESOLUTIONS: readonly VideoResolution[] = ['480p', '720p', '1080p'];

/**
 * Per §3.1. 1.0 durations [C]: the newer doc says 2–12, the older 3–12; we take 2–12 (our API
 * asks 4–15, so only the top end matters). 2.0 ranges [S] (several resellers agree).
 */
const SEEDANCE_MODELS: readonly SeedanceModel[] = [
  // Longer families first: `…-1-0-pro-fast` must not match `…-1-0-pro`.
  {
    family: 'doubao-seedance-1-0-pro-fast',
    modes: ['text', 'first_frame'],
    minDurationSeconds: 2,
    maxDurationSeconds: 12,
    autoDuration: false,
    resolutions: ALL_RESOLUTIONS,
    defaultResolution: '1080p',
  },
  {
    family: 'doubao-seedance-1-0-pro',
    modes: ['text', 'first_frame', 'first_last'],
    minDurationSeconds: 2,
    maxDurationSeconds: 12,
    autoDuration: false,
    resolutions: ALL_RESOLUTIONS,
    defaultResolution: '1080p',
  },
  {
    family: 'doubao-seedance-1-0-lite-t2v',
    modes: ['text'],
    minDurationSeconds: 2,
    maxDurationSeconds: 12,
    autoDuration: false,
    resolutions: ALL_RESOLUTIONS,
    defaultResolution: '720p',
  },
  {
    family: 'doubao-seedance-1-0-lite-i2v',
    modes: ['first_frame', 'first_last', 'reference'],
    minDurationSeconds: 2,
    maxDurationSeconds: 12,
    autoDuration: false,
    resolutions: ALL_RESOLUTIONS,
    defaultResolution: '720p',
  },
  {
    family: 'doubao-seedance-1-5-pro',
    modes: ['text', 'first_frame', 'first_last'],
    minDurationSeconds: 4,
    maxDurationSeconds: 12,
    autoDuration: true,
    resolutions: ALL_RESOLUTIONS,
    defaultResolution: '720p',
    generateAudio: true,
  },
  {
    family: 'doubao-seedance-2-0-fast',
    modes: ['text', 'first_frame', 'first_last', 'reference', 'reference_media'],
    minDurationSeconds: 4,
    maxDurationSeconds: 15,
    autoDuration: true,
    resolutions: ['480p', '720p'],
    defaultResolution: '720p',
    generateAudio: true,
  },
  {
    family: 'doubao-seedance-2-0',
    modes: ['text', 'first_frame', 'first_last', 'reference', 'reference_media'],
    minDurationSeconds: 4,
    maxDurationSeconds: 15,
    autoDuration: true,
    resolutions: ALL_RESOLUTIONS,
    defaultResolution: '720p',
    generateAudio: true,
  },
];

/**
 * An id we do not know (a newer model, or an `ep-…` endpoint id) is passed through with our
 * API's own limits and no mode checks: the provider judges it (404 if it does not exist).
 */
const UNKNOWN_MODEL: SeedanceModel = {
  family: '',
  modes: ['text', 'first_frame', 'first_last', 'reference', 'reference_media'],
  minDurationSeconds: 4,
  maxDurationSeconds: 15,
  autoDuration: false,
  resolutions: ALL_RESOLUTIONS,
  defaultResolution: '720p',
};

export function seedanceModel(id: string): SeedanceModel {
  return SEEDANCE_MODELS.find((m) => id === m.family || id.startsWith(`${m.family}-`)) ?? UNKNOWN_MODEL;
}

/** [ours] More images than this is `invalid_input` (3–4 is the lite-i2v reference range). */
export const MAX_IMAGES = 4;
/** 2.0 reference media [U]: resellers list up to 3 videos and 3 audio clips. */
export const MAX_REFERENCE_VIDEOS = 3;
export const MAX_REFERENCE_AUDIOS = 3;

export type ImageRole = 'first_frame' | 'last_frame' | 'reference_image';

/**
 * [ours] 1 image → first frame; 2 → first and last frame; 3–4 → reference images. With
 * reference video/audio (2.0) every image is a reference too: modes never mix.
 */
export function imageRoles(imageCount: number, withMedia: boolean): { mode: SeedanceMode; roles: ImageRole[] } {
  if (withMedia) return { mode: 'reference_media', roles: Array(imageCount).fill('reference_image') };
  if (imageCount === 0) return { mode: 'text', roles: [] };
  if (imageCount === 1) return { mode: 'first_frame', roles: ['first_frame'] };
  if (imageCount === 2) return { mode: 'first_last', roles: ['first_frame', 'last_frame'] };
  return { mode: 'reference', roles: Array(imageCount).fill('reference_image') };
}

export const MODE_NAMES: Record<SeedanceMode, string> = {
  text: 'text-to-video',
  first_frame: 'a first frame (1 image)',
  first_last: 'first and last frames (2 images)',
  reference: 'reference images (3–4 images)',
  reference_media: 'reference video/audio',
};

/** Input images the provider accepts: formats, < 30 MB, sides in (300, 6000) px, w/h in (0.4, 2.5). */
const IMAGE_MIME_TYPES = ['image/jpeg', 'image/png', 'image/webp', 'image/bmp', 'image/tiff', 'image/gif'];
const MAX_IMAGE_BYTES = 30 * 1024 * 1024;
const IMAGE_SIDE_PX = { min: 300, max: 6000 } as const;
const IMAGE_ASPECT = { min: 0.4, max: 2.5 } as const;

/** Why the provider would refuse this image, or null. Sizes are checked when known. */
export function imageProblem(input: RemoteInput, bytes: number): string | null {
  if (!IMAGE_MIME_TYPES.includes(input.mimeType)) return `is ${input.mimeType}; Seedance takes JPEG, PNG, WebP, BMP, TIFF or GIF`;
  if (bytes >= MAX_IMAGE_BYTES) return 'is 30 MB or larger';
  const { width, height } = input;
  if (width === null || height === null) return null;
  if (Math.min(width, height) <= IMAGE_SIDE_PX.min || Math.max(width, height) >= IMAGE_SIDE_PX.max) {
    return `is ${width}×${height}; each side must be between ${IMAGE_SIDE_PX.min} and ${IMAGE_SIDE_PX.max} px (exclusive)`;
  }
  const aspect = width / height;
  if (aspect <= IMAGE_ASPECT.min || aspect >= IMAGE_ASPECT.max) return `has aspect ${aspect.toFixed(2)}; width/height must be between 0.4 and 2.5 (exclusive)`;
  return null;
}

const FIXED_RATIOS: readonly Exclude<VideoRatio, 'adaptive'>[] = ['16:9', '4:3', '1:1', '3:4', '9:16', '21:9'];

function ratioValue(ratio: string): number {
  const [w, h] = ratio.split(':').map(Number);
  return w / h;
}

/**
 * `adaptive` is refused with reference images, and our contract says "adaptive: the first
 * image's aspect, else 16:9". So: text-only → 16:9; first frame(s) → `adaptive` (the provider
 * follows the image); references → the fixed ratio nearest the first image, else 16:9.
 */
export function resolveRatio(ratio: VideoRatio, mode: SeedanceMode, firstImage?: { width: number | null; height: number | null }): VideoRatio {
  if (ratio !== 'adaptive') return ratio;
  if (mode === 'first_frame' || mode === 'first_last') return 'adaptive';
  if ((mode === 'reference' || mode === 'reference_media') && firstImage?.width && firstImage.height) {
    const target = Math.log(firstImage.width / firstImage.height);
    return FIXED_RATIOS.reduce((best, r) => (Math.abs(Math.log(ratioValue(r)) - target) < Math.abs(Math.log(ratioValue(best)) - target) ? r : best));
  }
  return '16:9';
}

/** No 1080p with reference images (§3.2). */
export function resolutionAllowed(model: SeedanceModel, resolution: VideoResolution, mode: SeedanceMode): boolean {
  if (!model.resolutions.includes(resolution)) return false;
  return !(resolution === '1080p' && (mode === 'reference' || mode === 'reference_media'));
}

/** [ours] `max(3600, jobTimeoutSeconds)` inside the provider's range 3600–259200 (default 172800). */
const EXECUTION_EXPIRES_SECONDS = { min: 3600, max: 259_200 } as const;
export function executionExpiresAfter(jobTimeoutSeconds: number): number {
  return Math.min(EXECUTION_EXPIRES_SECONDS.max, Math.max(EXECUTION_EXPIRES_SECONDS.min, Math.ceil(jobTimeoutSeconds)));
}

/**
 * Status words (§3.3): six map 1:1 (some gateways drop `expired`; we must not), others run.
 * `succeeded` still needs a `video_url` (the adapter checks).
 */
const STATUS_MAP: Record<string, TaskStatus> = {
  queued: 'queued',
  running: 'running',
  succeeded: 'succeeded',
  failed: 'failed',
  cancelled: 'cancelled',
  expired: 'expired',
};

export function mapSeedanceStatus(status: string): TaskStatus {
  return statusFromTable(STATUS_MAP, status);
}

/** `quota_wait`: QuotaExceeded, which the adapter waits out on SEEDANCE_QUOTA. */
type ErrorKind = FaultKind | 'quota_wait';

/** §3.5, matched by prefix (suffixes like `.PolicyViolation` occur). First match wins. */
const SEEDANCE_ERRORS: readonly { prefix: string; kind: ErrorKind; code: JobErrorCode }[] = [
  { prefix: 'MissingParameter', kind: 'permanent', code: ERR.invalid_input },
  { prefix: 'InvalidParameter', kind: 'permanent', code: ERR.invalid_input },
  { prefix: 'InputTextSensitiveContentDetected', kind: 'permanent', code: ERR.content_moderation },
  { prefix: 'InputImageSensitiveContentDetected', kind: 'permanent', code: ERR.content_moderation },
  { prefix: 'OutputVideoSensitiveContentDetected', kind: 'permanent', code: ERR.content_moderation },
  { prefix: 'SensitiveContentDetected', kind: 'permanent', code: ERR.content_moderation },
  { prefix: 'AuthenticationError', kind: 'permanent', code: ERR.provider_auth },
  { prefix: 'AccountOverdueError', kind: 'permanent', code: ERR.quota_exceeded },
  { prefix: 'AccessDenied', kind: 'permanent', code: ERR.provider_auth },
  { prefix: 'InvalidEndpointOrModel', kind: 'permanent', code: ERR.provider_auth },
  { prefix: 'ModelNotOpen', kind: 'permanent', code: ERR.provider_auth },
  { prefix: 'RateLimitExceeded', kind: 'rate_limited', code: ERR.rate_limited },
  { prefix: 'ModelAccountRpmRateLimitExceeded', kind: 'rate_limited', code: ERR.rate_limited },
  { prefix: 'APIAccountRpmRateLimitExceeded', kind: 'rate_limited', code: ERR.rate_limited },
  { prefix: 'AccountRateLimitExceeded', kind: 'rate_limited', code: ERR.rate_limited },
  { prefix: 'ServerOverloaded', kind: 'rate_limited', code: ERR.rate_limited },
  { prefix: 'RequestBurstTooFast', kind: 'rate_limited', code: ERR.rate_limited },
  { prefix: 'QuotaExceeded', kind: 'quota_wait', code: ERR.quota_exceeded },
  { prefix: 'SetLimitExceeded', kind: 'permanent', code: ERR.quota_exceeded },
  { prefix: 'InternalServiceError', kind: 'retryable', code: ERR.provider_error },
];

export function classifySeedanceError(code: string | undefined): { kind: ErrorKind; code: JobErrorCode } | undefined {
  if (!code) return undefined;
  return SEEDANCE_ERRORS.find((e) => code.startsWith(e.prefix));
}

/** Unknown codes fall back on the HTTP status. */
export function classifyHttpStatus(status: number): { kind: FaultKind; code: JobErrorCode } {
  const common = classifyCommonStatus(status);
  if (common) return common;
  if (status === 404) return { kind: 'permanent', code: ERR.provider_auth };
  if (status >= 400 && status < 500) return { kind: 'permanent', code: ERR.invalid_input };
  return { kind: 'retryable', code: ERR.provider_error };
}

/** [ours] Every 4 s for the first minute, then every 15 s (vendor samples poll each second [S]). */
export function seedancePollDelayMs(pollCount: number): number {
  return twoSpeedPollDelayMs(pollCount, { firstPolls: 15, firstMs: 4_000, thenMs: 15_000 });
}

/**
 * Past `created_at + execution_expires_after` the provider should have said `expired`; a
 * gateway that drops it would keep us polling, so after this grace we call it expired ourselves.
 */
export const EXPIRY_GRACE_MS = 10 * 60_000;
