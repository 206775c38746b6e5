/**
 * Every EvoLink fact tagged [S], [C] or [U] in docs/providers.md §4, in one place: per-model size
 * and quality forms, reference-image limits, status and error maps, poll cadence.
 */
import { ERR, type JobErrorCode } from '../../lib/error-codes.ts';
import type { TaskStatus } from '../engine.ts';
import type { JobParams } from '../../contract/index.ts';
import { classifyCommonStatus, statusFromTable, twoSpeedPollDelayMs, type FaultKind } from './common.ts';

export const EVOLINK_ENGINE = 'evolink';

/** How a model family takes `size` and `quality` (per-model parameters are medium-low confidence). */
type SizeFamily = 'gpt' | 'seedream' | 'gemini';

function sizeFamily(model: string): SizeFamily {
  if (model.startsWith('doubao-seedream')) return 'seedream';
  if (model.startsWith('gemini')) return 'gemini';
  // gpt-image-1, gpt-image-1.5, gpt-4o-image, gpt-image-2 — and the fallback for unknown ids.
  return 'gpt';
}

/** GPT-image sizes, in pixel form; the worker resizes (cover) to the requested width×height. */
const GPT_SIZES = [
  { ratio: 1, size: '1024x1024' },
  { ratio: 2 / 3, size: '1024x1536' },
  { ratio: 3 / 2, size: '1536x1024' },
] as const;

/** Gemini image aspect strings [U]. */
const GEMINI_RATIOS = ['1:1', '2:3', '3:2', '3:4', '4:3', '4:5', '5:4', '9:16', '16:9', '21:9'] as const;

/** Seedream takes `WxH` of at least 1280×720 pixels [S]; we read that as area, sides ≤ 4096 [U]. */
const SEEDREAM_MIN_AREA = 1280 * 720;
const SEEDREAM_MAX_SIDE = 4096;

function nearest<T>(items: readonly T[], ratioOf: (item: T) => number, width: number, height: number): T {
  // [ours] Nearest aspect: min |ln(w/h) − ln r|, so 2:1 and 1:2 are equally far from 1:1.
  const target = Math.log(width / height);
  return items.reduce((best, item) => (Math.abs(Math.log(ratioOf(item)) - target) < Math.abs(Math.log(ratioOf(best)) - target) ? item : best));
}

function ratioOf(text: string): number {
  const [w, h] = text.split(':').map(Number);
  return w / h;
}

export function evolinkSize(model: string, width: number, height: number): string {
  switch (sizeFamily(model)) {
    case 'gpt':
      return nearest(GPT_SIZES, (s) => s.ratio, width, height).size;
    case 'gemini':
      return nearest(GEMINI_RATIOS, ratioOf, width, height);
    case 'seedream': {
      // One factor for both sides keeps the aspect: up to the minimum area, down to the side cap.
      let factor = Math.max(1, Math.sqrt(SEEDREAM_MIN_AREA / (width * height)));
      factor = Math.min(factor, SEEDREAM_MAX_SIDE / Math.max(width, height));
      let w = Math.round(width * factor);
      let h = Math.round(height * factor);
      while (w * h < SEEDREAM_MIN_AREA && Math.max(w, h) < SEEDREAM_MAX_SIDE) {
        w += 1;
        h = Math.round((w * height) / width);
      }
      return `${w}x${h}`;
    }
  }
}

/** `quality` low/medium/high for GPT-image models; `auto` (support unknown for gpt-image-1) and other families → omit [U]. */
export function evolinkQuality(model: string, quality: JobParams['quality']): string | undefined {
  if (!quality || quality === 'auto' || sizeFamily(model) !== 'gpt') return undefined;
  return quality;
}

/** Reference images: limits conflict (5×10 MB, 16×50 MB, 14×4 MB) [C]; [ours] 5 × 4 MB. */
export const MAX_REFERENCE_IMAGES = 5;
export const MAX_REFERENCE_BYTES = 4 * 1024 * 1024;
export const REFERENCE_MIME_TYPES = ['image/jpeg', 'image/png', 'image/webp'];

export interface EvolinkState {
  status: TaskStatus;
  /** The provider's `progress` copied (0–100), or null when it gave none. */
  progress: number | null;
}

const STATUS_MAP: Record<string, TaskStatus> = {
  pending: 'queued',
  processing: 'running',
  completed: 'succeeded',
  failed: 'failed',
};

/** §4.3. `completed` still needs `results` and `failed` a code: the adapter looks at those. */
export function mapEvolinkStatus(status: string, progress: unknown): EvolinkState {
  const mapped = statusFromTable(STATUS_MAP, status);
  if (mapped === 'succeeded') return { status: mapped, progress: 100 };
  const copied = typeof progress === 'number' && Number.isFinite(progress) ? Math.max(0, Math.min(100, progress)) : null;
  return { status: mapped, progress: copied };
}

/** `failed` with this code is a cancel, not a failure. */
export const CANCELLED_CODE = 'request_cancelled';

/** Failed-task codes (§4.4). Unknown codes: `provider_error`, not resubmittable. */
const EVOLINK_TASK_ERRORS: Record<string, { code: JobErrorCode; resubmittable: boolean }> = {
  content_policy_violation: { code: ERR.content_moderation, resubmittable: false },
  invalid_parameters: { code: ERR.invalid_input, resubmittable: false },
  image_processing_error: { code: ERR.invalid_input, resubmittable: false },
  image_dimension_mismatch: { code: ERR.invalid_input, resubmittable: false },
  generation_failed_no_content: { code: ERR.provider_error, resubmittable: false },
  resource_not_found: { code: ERR.provider_task_lost, resubmittable: false },
  generation_timeout: { code: ERR.provider_timeout, resubmittable: true },
  quota_exceeded: { code: ERR.quota_exceeded, resubmittable: true },
  service_error: { code: ERR.provider_error, resubmittable: true },
  resource_exhausted: { code: ERR.provider_error, resubmittable: true },
  service_unavailable: { code: ERR.provider_error, resubmittable: true },
  unknown_error: { code: ERR.provider_error, resubmittable: true },
  // [S]
  model_unavailable: { code: ERR.provider_error, resubmittable: true },
  upstream_error: { code: ERR.provider_error, resubmittable: true },
  rate_limited: { code: ERR.provider_error, resubmittable: true },
};

export function classifyTaskError(code: string | undefined): { code: JobErrorCode; resubmittable: boolean } {
  return (code && EVOLINK_TASK_ERRORS[code]) || { code: ERR.provider_error, resubmittable: false };
}

/** A 400 whose code or type names moderation is `content_moderation`, not `invalid_input`. */
const MODERATION = /content_policy|moderation|sensitive|safety/i;

/**
 * Call errors key on the HTTP status (`error.code` is sometimes a string, sometimes a number).
 * 404 on a task GET is handled by the adapter (a lost task, not an error).
 */
export function classifyEvolinkHttp(status: number, providerCode: string | number | undefined): { kind: FaultKind; code: JobErrorCode } {
  const common = classifyCommonStatus(status);
  if (common) return common;
  if (status === 400) return { kind: 'permanent', code: MODERATION.test(String(providerCode ?? '')) ? ERR.content_moderation : ERR.invalid_input };
  if (status === 402) return { kind: 'permanent', code: ERR.quota_exceeded };
  if (status === 413) return { kind: 'permanent', code: ERR.invalid_input };
  // 404 on create (wrong base URL), 409 `idempotency_conflict` [U] (same key, other body: our bug).
  return { kind: 'permanent', code: ERR.provider_error };
}

/** [ours] Every 3 s for the first half minute, then every 10 s (vendor scripts: 10 s; its MCP: 3–5 s [S]). */
export function evolinkPollDelayMs(pollCount: number): number {
  return twoSpeedPollDelayMs(pollCount, { firstPolls: 10, firstMs: 3_000, thenMs: 10_000 });
}
