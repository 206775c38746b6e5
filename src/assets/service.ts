import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { Asset, AssetKind } from '../contract/index.ts';
import type { AssetsTable, DbHandle } from '../db/index.ts';
import { keysetPage, retryOnSortKeyConflict, withTransaction } from '../db/index.ts';
import type { Clock } from '../lib/clock.ts';
import { ERR } from '../lib/error-codes.ts';
import { Invalid, NotFound, TooLarge } from '../lib/errors.ts';
import { isId, newId } from '../lib/ids.ts';
import { parseWith, withoutNulls } from '../lib/validate.ts';
import { checkPixelLimit, DEFAULT_MAX_INPUT_PIXELS, PixelLimitExceeded, probeFile, type ProbeResult } from '../media/probe.ts';
import { downloadToFile, FetchError } from '../net/index.ts';
import { findAssetKinds, insertAssetRows, toAsset } from './repo.ts';
import { listAssetsQuerySchema, registerAssetBodySchema } from './request.ts';
import type { Store } from './store.ts';
import { tempPath, writeStreamToTemp, type WrittenFile } from './temp-file.ts';

export interface AssetServiceDeps {
  handle: DbHandle;
  store: Store;
  clock: Clock;
  tempDir: string;
  maxUploadBytes: number;
  allowPrivateUrls: boolean;
  /**
   * Largest width × height of an uploaded or URL-registered image (ZHINIAN_MAX_INPUT_PIXELS), read
   * from its header before anything decodes it; above it `prepare` throws TooLarge. Default: sharp's.
   */
  maxInputPixels?: number;
  /** Base of `downloadUrl`. */
  baseUrl: () => string;
}

export type AssetService = ReturnType<typeof createAssetService>;

export interface NewAssetInput {
  file: WrittenFile;
  clientId: string;
  name: string;
  source: Asset['source'];
  sourceUrl?: string | null;
  jobId?: string | null;
  /** A kind the caller asserts; must agree with the content. */
  kind?: AssetKind;
  /** The file's probe, when the caller already has it. */
  probe?: ProbeResult;
}

export function storageKeyFor(assetId: string): string {
  return `${assetId.slice(-2)}/${assetId}`;
}

/** C0 and C1 controls, DEL, and the bidi controls that can make `gpj.exe` display as `exe.jpg`. */
const UNSAFE_IN_NAMES = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu;
const MAX_NAME_LENGTH = 255;

/**
 * Keeps a file name safe to echo in headers, paths and the console: the last path segment,
 * without control, bidi or unpaired surrogate characters, at most 255 UTF-16 units, cut between
 * code points (never inside a surrogate pair).
 */
export function cleanName(name: string | undefined, fallback: string): string {
  const base = path.basename((name ?? '').replace(/\\/g, '/'));
  let out = '';
  for (const char of base.replace(UNSAFE_IN_NAMES, '')) {
    if (char.length === 1 && char >= '\ud800' && char <= '\udfff') continue;
    if (out.length + char.length > MAX_NAME_LENGTH) break;
    out += char;
  }
  return out.trim() || fallback;
}

export function createAssetService(deps: AssetServiceDeps) {
  const { handle, store, clock } = deps;
  const { db } = handle;

  /**
   * Probes a finished temp file, moves it into the store and returns the row to insert.
   * Rows are inserted by the caller, so a job's outputs appear in the same transaction that
   * finishes the job.
   */
  async function prepare(input: NewAssetInput): Promise<AssetsTable> {
    // Client data meets the pixel limit here, from its header; a job's outputs were made by the
    // local engine or already checked by the worker (provider results).
    const maxInputPixels = input.source === 'output' ? undefined : (deps.maxInputPixels ?? DEFAULT_MAX_INPUT_PIXELS);
    let probe: ProbeResult;
    try {
      probe = input.probe ?? (await probeFile(input.file.path, { maxInputPixels }));
      if (input.probe) checkPixelLimit(probe.width, probe.height, maxInputPixels);
    } catch (error) {
      if (error instanceof PixelLimitExceeded) throw error.about(input.source === 'url' ? 'url' : `files (${input.name})`);
      throw error;
    }
    let kind: AssetKind = probe.kind;
    if (input.kind) {
      const compatible = input.kind === 'file' || input.kind === probe.kind || (input.kind === 'mask' && probe.kind === 'image');
      if (!compatible) throw new Invalid('kind', `the content is ${probe.mimeType}, not ${input.kind}`);
      kind = input.kind;
    }
    const id = newId('asset');
    const storageKey = storageKeyFor(id);
    await store.putFile(storageKey, input.file.path);
    return {
      id,
      client_id: input.clientId,
      kind,
      name: input.name,
      mime_type: probe.mimeType,
      bytes: input.file.bytes,
      sha256: input.file.sha256,
      width: probe.width,
      height: probe.height,
      duration_seconds: probe.durationSeconds,
      source: input.source,
      source_url: input.sourceUrl ?? null,
      job_id: input.jobId ?? null,
      storage_key: storageKey,
      created_at_us: 0, // set on insert
    };
  }

  async function insert(rows: AssetsTable[]): Promise<Asset[]> {
    const now = clock.now();
    const saved = await retryOnSortKeyConflict(() => withTransaction(handle, (tx) => insertAssetRows(tx, handle.dialect, rows, now)));
    return saved.map((r) => toAsset(r, deps.baseUrl()));
  }

  async function findRow(clientId: string, id: string): Promise<AssetsTable> {
    if (!isId('asset', id)) throw new NotFound('Asset');
    const row = await db.selectFrom('assets').selectAll().where('id', '=', id).where('client_id', '=', clientId).executeTakeFirst();
    if (!row) throw new NotFound('Asset');
    return row;
  }

  return {
    prepare,
    /** For signed download links, whose signature already proves access. */
    async findRowById(id: string): Promise<AssetsTable> {
      if (!isId('asset', id)) throw new NotFound('Asset');
      const row = await db.selectFrom('assets').selectAll().where('id', '=', id).executeTakeFirst();
      if (!row) throw new NotFound('Asset');
      return row;
    },
    /** Streams one uploaded file to a temp file, capped at the upload limit. */
    receive: (stream: Readable) => writeStreamToTemp(stream, deps.tempDir, deps.maxUploadBytes),

    /** Stores uploaded files as assets, all or none. */
    async createFromUploads(clientId: string, files: { file: WrittenFile; name: string }[]): Promise<Asset[]> {
      const rows: AssetsTable[] = [];
      try {
        for (const f of files) rows.push(await prepare({ file: f.file, clientId, name: f.name, source: 'upload' }));
        return await insert(rows);
      } catch (error) {
        await Promise.all(files.map((f) => fsp.rm(f.file.path, { force: true })));
        await Promise.all(rows.map((r) => store.delete(r.storage_key)));
        throw error;
      }
    },

    /** Fetches a URL (SSRF-guarded, size-capped) and stores it as an asset. */
    async createFromUrl(clientId: string, body: unknown): Promise<Asset> {
      const input = parseWith(registerAssetBodySchema, withoutNulls(body));
      const target = tempPath(deps.tempDir);
      await fsp.mkdir(deps.tempDir, { recursive: true });
      let fetched: Awaited<ReturnType<typeof downloadToFile>>;
      try {
        fetched = await downloadToFile(input.url, target, { allowPrivate: deps.allowPrivateUrls, maxBytes: deps.maxUploadBytes });
      } catch (error) {
        if (error instanceof FetchError) {
          if (error.code === ERR.too_large) throw new TooLarge(`url: the file is larger than the ${deps.maxUploadBytes}-byte limit.`);
          throw new Invalid('url', error.message);
        }
        throw error;
      }
      const fallback = path.basename(new URL(fetched.finalUrl).pathname) || 'download';
      try {
        const row = await prepare({
          file: { path: target, bytes: fetched.bytes, sha256: fetched.sha256 },
          clientId,
          name: cleanName(input.name, fallback),
          source: 'url',
          sourceUrl: input.url,
          kind: input.kind,
        });
        const [asset] = await insert([row]);
        return asset;
      } finally {
        await fsp.rm(target, { force: true });
      }
    },

    insert,
    async get(clientId: string, id: string): Promise<Asset> {
      return toAsset(await findRow(clientId, id), deps.baseUrl());
    },
    findRow,
    /** Kinds of the client's own assets among `ids` (job validation: inputs must be the client's). */
    kindsOf: (clientId: string, ids: readonly string[]): Promise<Map<string, AssetKind>> => findAssetKinds(db, clientId, ids),

    async list(clientId: string, query: unknown): Promise<{ assets: Asset[]; nextBefore: string | null }> {
      const q = parseWith(listAssetsQuerySchema, query, 'query parameter');
      const limit = q.limit ?? 20;
      let select = db.selectFrom('assets').selectAll().where('client_id', '=', clientId);
      if (q.kind) select = select.where('kind', '=', q.kind);
      const { rows, nextBefore } = await keysetPage(select, { before: q.before, limit });
      return { assets: rows.map((r) => toAsset(r, deps.baseUrl())), nextBefore };
    },
  };
}
