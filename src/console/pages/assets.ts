import contentDisposition from 'content-disposition';
import type { FastifyInstance } from 'fastify';
import { sendError } from '../../api/errors.ts';
import { ifNoneMatchHits, parseRange } from '../../api/range.ts';
import { ASSET_KINDS } from '../../contract/index.ts';
import { ERR } from '../../lib/error-codes.ts';
import type { ConsoleDeps } from '../deps.ts';
import { assetRow, listAssets } from '../queries/assets.ts';
import type { Render } from '../render.ts';

/**
 * Types a console preview may show inline: raster images, video and audio, which a browser
 * renders as media and which cannot carry script. Stored types come from the file's magic bytes
 * (media/probe.ts), never from the uploader, but the list is an allow-list all the same: SVG,
 * XML, XHTML, HTML, PDF and anything unknown are downloads.
 */
const INLINE_TYPES = new Set([
  'image/png',
  'image/apng',
  'image/jpeg',
  'image/gif',
  'image/webp',
  'image/avif',
  'image/bmp',
  'image/x-icon',
  'image/vnd.microsoft.icon',
  'video/mp4',
  'video/webm',
  'video/ogg',
  'video/quicktime',
  'video/x-matroska',
  'audio/mpeg',
  'audio/mp4',
  'audio/aac',
  'audio/ogg',
  'audio/opus',
  'audio/wav',
  'audio/x-wav',
  'audio/webm',
  'audio/flac',
  'audio/x-flac',
]);

/**
 * On every asset answer, inline or not: a document made of a client's bytes gets an opaque
 * origin (`sandbox`), runs no script and loads nothing but the media itself. Inline style only
 * because the browser's own image and media viewer styles itself that way; the bytes served
 * inline are media, never markup, so no style of the client's applies.
 */
const ASSET_CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox";

/** Whether the console may show a stored type inline (else: an attachment, as bytes). */
function previewInline(mimeType: string): boolean {
  return INLINE_TYPES.has(mimeType.split(';')[0].trim().toLowerCase());
}

const str = (v: unknown, max = 128) => (typeof v === 'string' && v !== '' ? v.slice(0, max) : undefined);

/** The asset browser and the console's own download route (previews on the job page). */
export function registerAssetPages(admin: FastifyInstance, deps: ConsoleDeps, render: Render): void {
  admin.get('/assets', async (request, reply) => {
    const q = request.query as Record<string, unknown>;
    const kind = str(q.kind);
    const filter = {
      clientId: str(q.clientId),
      kind: kind && (ASSET_KINDS as readonly string[]).includes(kind) ? kind : undefined,
      jobId: str(q.jobId, 64),
      before: str(q.before, 64),
      limit: str(q.limit, 4) === undefined ? undefined : Number(q.limit) || undefined,
    };
    const page = await listAssets(deps.handle, filter);
    return render(reply, request, 'assets', { nav: 'assets', title: '', filter, kinds: ASSET_KINDS, ...page });
  });

  /**
   * Any client's asset, for a signed-in user: Range and ETag as on /api/v1, streamed from the
   * store (never buffered). The CSP lets images and media come only from us, so a presigning
   * store (S3) is streamed through rather than redirected to.
   */
  admin.get<{ Params: { id: string } }>('/assets/:id/content', async (request, reply) => {
    reply.header('content-security-policy', ASSET_CSP).header('x-content-type-options', 'nosniff');
    const row = await assetRow(deps.handle, request.params.id);
    if (!row) return sendError(reply, ERR.not_found, 'No such asset.');
    const size = Number(row.bytes);
    const etag = `"${row.sha256}"`;
    reply.header('cache-control', 'private, no-cache');
    if (ifNoneMatchHits(request.headers['if-none-match'], etag)) return reply.status(304).header('etag', etag).send();
    reply.header('etag', etag).header('accept-ranges', 'bytes');
    const ifRange = request.headers['if-range'];
    const range = ifRange === undefined || ifRange === etag ? parseRange(request.headers.range, size) : null;
    if (range === 'unsatisfiable') {
      return sendError(reply.header('content-range', `bytes */${size}`), ERR.range_not_satisfiable, 'Range not satisfiable.');
    }
    const inline = previewInline(row.mime_type);
    reply
      .header('content-type', inline ? row.mime_type : 'application/octet-stream')
      .header('content-disposition', contentDisposition(row.name, { type: inline ? 'inline' : 'attachment' }));
    if (range) {
      reply
        .status(206)
        .header('content-range', `bytes ${range.start}-${range.end}/${size}`)
        .header('content-length', range.end - range.start + 1);
      return reply.send(await deps.store.get(row.storage_key, range));
    }
    reply.header('content-length', size);
    return reply.send(await deps.store.get(row.storage_key));
  });
}
