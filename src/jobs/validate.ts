import { checkUrl, FetchError } from '../net/index.ts';
import type { AssetService } from '../assets/index.ts';
import type { Capability, JobParams, Material } from '../contract/index.ts';
import type { EngineRegistry } from '../engines/registry.ts';
import { Forbidden, Invalid } from '../lib/errors.ts';
import { parseWith } from '../lib/validate.ts';
import { createJobBodySchema, type CreateJobBody } from './request.ts';

/** Which optional fields each capability takes; anything else is refused, not ignored. */
export const FIELDS_FOR: Record<Capability, readonly (keyof CreateJobBody)[]> = {
  'image.generate': ['width', 'height', 'scale', 'quality', 'force_single'],
  'image.inpaint': [],
  'image.upscale': ['resolution'],
  'video.generate': ['settings'],
};
const CAPABILITY_FIELDS = new Set(Object.values(FIELDS_FOR).flat());

const METADATA_MAX_BYTES = 4096;
const MAX_REFERENCE_IMAGES = 10;

export interface ValidatedJob {
  capability: Capability;
  prompt: string | null;
  params: JobParams;
  inputAssetIds: string[];
  webhookUrl: string | null;
  metadata: Record<string, unknown> | null;
  engine: string;
  /** The client chose the engine: never reroute the job. */
  enginePinned: boolean;
}

export interface ValidateContext {
  /** The client's own assets' kinds (the asset service's `kindsOf`). */
  assetKinds: AssetService['kindsOf'];
  clientId: string;
  engines: EngineRegistry;
  allowPrivateUrls: boolean;
  /** Engines the client may use (its console setting); null: every engine. */
  allowedEngines: string[] | null;
}

type InputKind = 'image' | 'video' | 'audio' | 'other';

/** Checks a create-job body completely; every failure names its field. */
export async function validateJobRequest(raw: unknown, ctx: ValidateContext): Promise<ValidatedJob> {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Invalid(null, 'The request body must be a JSON object.');
  const body = parseWith(createJobBodySchema, raw);
  const capability = body.capability;

  for (const field of CAPABILITY_FIELDS) {
    if (body[field] !== undefined && !FIELDS_FOR[capability].includes(field)) {
      throw new Invalid(field, `is not a parameter of ${capability}`);
    }
  }

  const checkField = (field: string, url: string) => {
    try {
      checkUrl(url, { allowPrivate: ctx.allowPrivateUrls });
    } catch (error) {
      if (error instanceof FetchError) throw new Invalid(field, error.message);
      throw error;
    }
  };
  body.inputUrls?.forEach((u, i) => checkField(`inputUrls[${i}]`, u));
  body.imageUrls?.forEach((u, i) => checkField(`imageUrls[${i}]`, u));
  body.materials?.forEach((m, i) => checkMaterial(m, i, checkField));
  if (body.webhookUrl !== undefined) checkField('webhookUrl', body.webhookUrl);

  if (body.metadata !== undefined && Buffer.byteLength(JSON.stringify(body.metadata)) > METADATA_MAX_BYTES) {
    throw new Invalid('metadata', `must be at most ${METADATA_MAX_BYTES} bytes of JSON`);
  }

  const inputKinds = await resolveInputKinds(body, ctx);
  checkInputsFor(capability, body, inputKinds);

  const allowed = ctx.allowedEngines === null ? null : new Set(ctx.allowedEngines);
  if (body.engine !== undefined && allowed !== null && !allowed.has(body.engine)) {
    throw new Forbidden(`engine: "${body.engine}" is not among the engines this client may use.`);
  }
  const choices = ctx.engines.namesFor(capability);
  const permitted = allowed === null ? choices : choices.filter((name) => allowed.has(name));
  if (body.engine === undefined && choices.length > 0 && permitted.length === 0) {
    throw new Forbidden(`engine: none of the engines this client may use runs ${capability}.`);
  }
  const engineName = body.engine ?? (allowed === null ? ctx.engines.defaultFor(capability)?.name : permitted[0]);
  const engine = engineName === undefined ? undefined : ctx.engines.get(engineName);
  if (!engine) {
    throw body.engine === undefined
      ? new Invalid('capability', `no engine is available for ${capability}`)
      : new Invalid('engine', `unknown or unavailable engine "${body.engine}"`);
  }
  if (!engine.capabilities.includes(capability)) throw new Invalid('engine', `engine "${engine.name}" does not support ${capability}`);

  return {
    capability,
    prompt: body.prompt ?? null,
    params: normalizeParams(body),
    inputAssetIds: body.inputAssetIds ?? [],
    webhookUrl: body.webhookUrl ?? null,
    metadata: body.metadata ?? null,
    engine: engine.name,
    // A client kept to some engines is never rerouted to another (failover picks among all engines).
    enginePinned: body.engine !== undefined || (allowed !== null && permitted.length < choices.length),
  };
}

function checkMaterial(m: Material, i: number, checkField: (field: string, url: string) => void): void {
  if ((m.url === undefined) === (m.assetId === undefined)) throw new Invalid(`materials[${i}]`, 'needs exactly one of url or assetId');
  if (m.url !== undefined) checkField(`materials[${i}].url`, m.url);
}

/** Kinds of every input in run order; asset ids must name the client's own assets. */
async function resolveInputKinds(body: CreateJobBody, ctx: ValidateContext): Promise<InputKind[]> {
  const refs: { field: string; id: string }[] = [
    ...(body.inputAssetIds ?? []).map((id, i) => ({ field: `inputAssetIds[${i}]`, id })),
    ...(body.materials ?? []).flatMap((m, i) => (m.assetId ? [{ field: `materials[${i}].assetId`, id: m.assetId }] : [])),
  ];
  const kinds = await ctx.assetKinds(
    ctx.clientId,
    refs.map((r) => r.id),
  );
  const missing = refs.find((r) => !kinds.has(r.id));
  if (missing) throw new Invalid(missing.field, `asset ${missing.id} not found`);
  const assetKind = (id: string): InputKind => {
    const kind = kinds.get(id);
    return kind === 'image' || kind === 'mask' ? 'image' : kind === 'video' || kind === 'audio' ? kind : 'other';
  };
  return [
    ...(body.inputAssetIds ?? []).map(assetKind),
    // A URL's type is only known once fetched; inputUrls count as images where images are needed.
    ...(body.inputUrls ?? []).map((): InputKind => 'image'),
    ...(body.imageUrls ?? []).map((): InputKind => 'image'),
    ...(body.materials ?? []).map((m): InputKind => (m.assetId ? assetKind(m.assetId) : m.type)),
  ];
}

function checkInputsFor(capability: Capability, body: CreateJobBody, kinds: InputKind[]): void {
  const images = kinds.filter((k) => k === 'image').length;
  const others = kinds.length - images;
  const inputsField = 'imageUrls';
  switch (capability) {
    case 'image.generate':
      if (!body.prompt) throw new Invalid('prompt', 'is required for image.generate');
      if (others > 0) throw new Invalid(inputsField, 'image.generate takes only images as references');
      if (images > MAX_REFERENCE_IMAGES) throw new Invalid(inputsField, `at most ${MAX_REFERENCE_IMAGES} reference images`);
      return;
    case 'image.inpaint':
      if (!body.prompt) throw new Invalid('prompt', 'is required for image.inpaint');
      if (images !== 2 || others > 0) {
        throw new Invalid(inputsField, `image.inpaint needs exactly two images, the original then the mask (got ${kinds.length} inputs)`);
      }
      return;
    case 'image.upscale':
      if (images !== 1 || others > 0) throw new Invalid(inputsField, `image.upscale needs exactly one image (got ${kinds.length} inputs)`);
      return;
    case 'video.generate':
      if (!body.prompt && kinds.length === 0) throw new Invalid('prompt', 'video.generate needs a prompt or at least one material');
      return;
  }
}

/** What `job.params` holds: the request's fields for its capability, defaults filled in. */
function normalizeParams(body: CreateJobBody): JobParams {
  const params: JobParams = {};
  switch (body.capability) {
    case 'image.generate':
      params.width = body.width ?? 1024;
      params.height = body.height ?? 1024;
      if (body.scale !== undefined) params.scale = body.scale;
      if (body.quality !== undefined) params.quality = body.quality;
      if (body.force_single !== undefined) params.force_single = body.force_single;
      break;
    case 'image.upscale':
      params.resolution = body.resolution ?? '4k';
      break;
    case 'video.generate':
      params.settings = {
        ratio: body.settings?.ratio ?? 'adaptive',
        duration: body.settings?.duration ?? 5,
        resolution: body.settings?.resolution ?? '720p',
      };
      break;
  }
  if (body.materials) params.materials = body.materials;
  if (body.imageUrls) params.imageUrls = body.imageUrls;
  if (body.inputUrls) params.inputUrls = body.inputUrls;
  return params;
}
