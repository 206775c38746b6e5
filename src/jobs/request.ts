import { z } from 'zod';
import { withoutNulls } from '../lib/validate.ts';
import { CAPABILITIES, IMAGE_QUALITIES, UPSCALE_RESOLUTIONS, VIDEO_RATIOS, VIDEO_RESOLUTIONS } from '../contract/index.ts';

/**
 * The body of `POST /api/v1/jobs`. The same schema validates requests and is rendered into
 * the OpenAPI document, so the two cannot drift. Rules that span fields (which inputs a
 * capability needs) live in `validate.ts`.
 */
const httpUrl = z.string().max(2048).describe('http(s) URL the worker fetches');
/** Text a person wrote: at least one character that is not white space. */
const text = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .refine((s) => s.trim() !== '', 'must not be blank');
const assetId = z.string().regex(/^asset_[0-9a-z]{26}$/, 'must be an asset id (asset_…)');

const materialSchema = z
  .object({
    type: z.enum(['image', 'video', 'audio']),
    url: httpUrl.optional(),
    assetId: assetId.optional(),
    label: text(64).optional().describe('How the prompt refers to it, e.g. @图片1'),
  })
  .strict();

const videoSettingsSchema = z
  .object({
    ratio: z.enum(VIDEO_RATIOS).optional().describe("default adaptive: the first image's aspect, else 16:9"),
    duration: z.int().min(4).max(15).optional().describe('seconds, default 5'),
    resolution: z.enum(VIDEO_RESOLUTIONS).optional().describe('short side 480/720/1080, default 720p'),
  })
  .strict();

export const createJobBodySchema = z
  .object({
    capability: z.enum(CAPABILITIES),
    prompt: text(4000).optional(),
    width: z.int().min(64).max(8192).optional().describe('image.generate, default 1024'),
    height: z.int().min(64).max(8192).optional().describe('image.generate, default 1024'),
    scale: z.number().min(0).max(100).optional().describe('image.generate: how much the text outweighs references (Jimeng)'),
    quality: z.enum(IMAGE_QUALITIES).optional().describe('image.generate quality (EvoLink)'),
    force_single: z.boolean().optional().describe('image.generate: return one image only'),
    resolution: z.enum(UPSCALE_RESOLUTIONS).optional().describe('image.upscale: long side 2048/3840/7680, default 4k'),
    settings: videoSettingsSchema.optional().describe('video.generate'),
    materials: z.array(materialSchema).max(16).optional(),
    imageUrls: z.array(httpUrl).max(16).optional(),
    inputUrls: z.array(httpUrl).max(16).optional(),
    inputAssetIds: z.array(assetId).max(16).optional(),
    webhookUrl: httpUrl.optional(),
    metadata: z.record(z.string(), z.unknown()).optional().describe('Echoed back untouched; at most 4 KiB of JSON'),
    engine: z.string().min(1).max(64).optional().describe('Force one engine by name'),
  })
  .strict();

export type CreateJobBody = z.infer<typeof createJobBodySchema>;

/**
 * JSON clients often send `null` for "not set": such fields are dropped before anything else
 * looks at the body (validation and the idempotency hash alike), at the top level, in
 * `settings` and in each of `materials`. Nulls inside `metadata` are the client's data and stay.
 */
export function withoutNullFields(body: unknown): unknown {
  const out = withoutNulls(body);
  if (out !== body) {
    const fields = out as Record<string, unknown>;
    if (fields.settings !== undefined) fields.settings = withoutNulls(fields.settings);
    if (Array.isArray(fields.materials)) fields.materials = fields.materials.map(withoutNulls);
  }
  return out;
}

export const listJobsQuerySchema = z
  .object({
    status: z.enum(['queued', 'running', 'succeeded', 'failed', 'expired', 'cancelled']).optional(),
    capability: z.enum(CAPABILITIES).optional(),
    limit: z.coerce.number().int().min(1).max(200).optional().describe('1–200, default 20'),
    before: z.string().optional().describe('ISO time (exclusive); pass nextBefore to get the next page'),
  })
  .strict();
