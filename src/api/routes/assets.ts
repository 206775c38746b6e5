import contentDisposition from 'content-disposition';
import type { FastifyInstance } from 'fastify';
import { ASSET_DOWNLOAD_ROUTE, type AssetService, type Store } from '../../assets/index.ts';
import { ERR } from '../../lib/error-codes.ts';
import { clientOf } from '../auth.ts';
import { sendError } from '../errors.ts';
import { isMultipart, receiveFiles } from '../multipart.ts';
import { ifNoneMatchHits, parseRange } from '../range.ts';

const MAX_UPLOAD_FILES = 20;
/**
 * Life of a presigned redirect target. The client follows the 302 at once; players that seek
 * come back to this route and get a fresh URL, so minutes are plenty and a leaked URL dies soon.
 */
const PRESIGNED_TTL_SECONDS = 600;

export function registerAssetRoutes(app: FastifyInstance, assets: AssetService, store: Store): void {
  app.post('/api/v1/assets', async (request, reply) => {
    const clientId = clientOf(request);
    if (!isMultipart(request)) {
      return reply.status(201).send({ asset: await assets.createFromUrl(clientId, request.body) });
    }
    // Each file streams to disk as it arrives; nothing is held in memory.
    const received = await receiveFiles(request, { maxFiles: MAX_UPLOAD_FILES, receive: assets.receive });
    return reply.status(201).send({ assets: await assets.createFromUploads(clientId, received) });
  });

  app.get<{ Params: { id: string } }>('/api/v1/assets/:id', async (request) => ({ asset: await assets.get(clientOf(request), request.params.id) }));

  app.get('/api/v1/assets', async (request) => assets.list(clientOf(request), request.query));

  app.get<{ Params: { id: string } }>(ASSET_DOWNLOAD_ROUTE, { config: { access: 'key-or-signed-link' } }, async (request, reply) => {
    // A signed link opens exactly the asset it was made for; anything else needs the owner's key.
    const row =
      request.signedAssetId !== null && request.signedAssetId === request.params.id
        ? await assets.findRowById(request.params.id)
        : await assets.findRow(clientOf(request), request.params.id);
    const size = Number(row.bytes);
    const etag = `"${row.sha256}"`;
    const cacheForever = 'private, max-age=31536000, immutable';
    // A client holding this ETag already has the bytes (with presigned downloads, 304 also
    // spares it the redirect).
    if (ifNoneMatchHits(request.headers['if-none-match'], etag)) return reply.status(304).header('etag', etag).header('cache-control', cacheForever).send();
    if (store.presignGet) {
      // Access is settled above (key or signed link); the store serves the bytes and ranges.
      // The 302 itself carries no ETag and must not be cached past the presigned URL's life.
      const location = await store.presignGet(row.storage_key, { expiresInSeconds: PRESIGNED_TTL_SECONDS, fileName: row.name, contentType: row.mime_type });
      return reply.status(302).header('location', location).header('cache-control', 'private, no-store').send();
    }
    reply.header('etag', etag).header('accept-ranges', 'bytes').header('cache-control', cacheForever);
    const ifRange = request.headers['if-range'];
    const range = ifRange === undefined || ifRange === etag ? parseRange(request.headers.range, size) : null;
    if (range === 'unsatisfiable') {
      return sendError(reply.header('content-range', `bytes */${size}`), ERR.range_not_satisfiable, 'Range not satisfiable.');
    }
    reply.header('content-type', row.mime_type).header('content-disposition', contentDisposition(row.name));
    if (range) {
      reply
        .status(206)
        .header('content-range', `bytes ${range.start}-${range.end}/${size}`)
        .header('content-length', range.end - range.start + 1);
      return reply.send(await store.get(row.storage_key, range));
    }
    reply.header('content-length', size);
    return reply.send(await store.get(row.storage_key));
  });
}
