import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { downloadToFile, FetchError } from '../net/index.ts';
import type { AssetService, Store } from '../assets/index.ts';
import { EngineError, type EngineInput, type InputRole } from '../engines/engine.ts';
import { ERR } from '../lib/error-codes.ts';
import { checkPixelLimit, PixelLimitExceeded, probeFile } from '../media/probe.ts';
import type { ClaimedJob } from '../queue/index.ts';

export interface InputContext {
  assets: AssetService;
  store: Store;
  workDir: string;
  maxBytes: number;
  /** ZHINIAN_MAX_INPUT_PIXELS: an image input declaring more pixels fails the job (input_too_large). */
  maxInputPixels: number;
  allowPrivateUrls: boolean;
  signal: AbortSignal;
}

type Source = { field: string; assetId: string; label?: string } | { field: string; url: string; label?: string };

/** The job's inputs in contract order: inputAssetIds, inputUrls, imageUrls, materials. */
function sourcesOf(job: ClaimedJob): Source[] {
  const { params } = job;
  return [
    ...job.inputAssetIds.map((assetId, i) => ({ field: `inputAssetIds[${i}]`, assetId })),
    ...(params.inputUrls ?? []).map((url, i) => ({ field: `inputUrls[${i}]`, url })),
    ...(params.imageUrls ?? []).map((url, i) => ({ field: `imageUrls[${i}]`, url })),
    ...(params.materials ?? []).map((m, i) =>
      m.assetId ? { field: `materials[${i}]`, assetId: m.assetId, label: m.label } : { field: `materials[${i}]`, url: m.url!, label: m.label },
    ),
  ];
}

function roleOf(kind: string): InputRole {
  return kind === 'video' || kind === 'audio' || kind === 'mask' ? kind : 'image';
}

/** An image over the pixel limit fails the job at once: trying again cannot make it smaller. */
function overPixelLimit(field: string, error: PixelLimitExceeded): EngineError {
  return new EngineError(ERR.input_too_large, `${field}: ${error.detail}`);
}

/** Runs `check`, turning a pixel-limit refusal into the job's input_too_large error. */
async function withinPixelLimit<T>(field: string, check: () => T | Promise<T>): Promise<T> {
  try {
    return await check();
  } catch (error) {
    if (error instanceof PixelLimitExceeded) throw overPixelLimit(field, error);
    throw error;
  }
}

/**
 * Puts every input on local disk for the engine: own assets straight from the store (no copy
 * for local files), URLs through the SSRF guard with the upload size cap. Every image is held
 * to the pixel limit from its header before any engine decodes it (an asset stored before the
 * limit was lowered may be over it). A failure fails the job with a stable error code naming
 * the input.
 */
export async function materializeInputs(job: ClaimedJob, ctx: InputContext): Promise<EngineInput[]> {
  const inputs: EngineInput[] = [];
  for (const [i, source] of sourcesOf(job).entries()) {
    if ('assetId' in source) {
      const row = await ctx.assets.findRow(job.clientId, source.assetId).catch(() => {
        throw new EngineError(ERR.invalid_input, `${source.field}: asset ${source.assetId} no longer exists`);
      });
      const image = row.kind !== 'video' && row.kind !== 'audio';
      // The size probed when it was stored (a video's frame size is not held to the image limit).
      if (image) await withinPixelLimit(source.field, () => checkPixelLimit(row.width, row.height, ctx.maxInputPixels));
      let file = ctx.store.localPath?.(row.storage_key);
      if (!file) {
        file = path.join(ctx.workDir, `input-${i}`);
        await pipeline(await ctx.store.get(row.storage_key), fs.createWriteStream(file), { signal: ctx.signal });
      }
      // No size on record (a "file" that sharp may still decode, such as SVG): read its header now.
      if (image && (row.width === null || row.height === null)) {
        const stored = file;
        await withinPixelLimit(source.field, () => probeFile(stored, { maxInputPixels: ctx.maxInputPixels, signal: ctx.signal }));
      }
      inputs.push({ role: roleOf(row.kind), path: file, mimeType: row.mime_type, label: source.label, assetId: row.id });
      continue;
    }
    const file = path.join(ctx.workDir, `input-${i}`);
    try {
      await downloadToFile(source.url, file, { allowPrivate: ctx.allowPrivateUrls, maxBytes: ctx.maxBytes, signal: ctx.signal });
    } catch (error) {
      if (!(error instanceof FetchError)) throw error;
      const code = error.code === ERR.too_large ? ERR.input_too_large : ERR.input_fetch_failed;
      // Connection trouble may pass; a refused or missing URL will not.
      const retryable = error.code === ERR.fetch_failed || error.code === ERR.timeout || (error.status ?? 0) >= 500;
      throw new EngineError(code, `${source.field}: ${error.message}`, { retryable });
    }
    const probe = await withinPixelLimit(source.field, () => probeFile(file, { maxInputPixels: ctx.maxInputPixels, signal: ctx.signal }));
    inputs.push({ role: roleOf(probe.kind), path: file, mimeType: probe.mimeType, label: source.label, sourceUrl: source.url });
  }
  return inputs;
}
