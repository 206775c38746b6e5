import fsp from 'node:fs/promises';
import contentDisposition from 'content-disposition';
import type { FastifyInstance } from 'fastify';
import { cleanName, type AssetService, type Store, type WrittenFile } from '../../assets/index.ts';
import { Invalid } from '../../lib/errors.ts';
import { parseRange } from '../range.ts';

const MAX_FILES = 20;
/**
 * Life of a presigned redirect target. The client follows the 302 at once; players that seek
 * come back to this route and get a fresh URL, so minutes are plenty and a leaked URL dies soon.
 */
const PRESIGNED_TTL_SECONDS = 600;

export function registerAssetRoutes(app: FastifyInstance, assets: AssetService, store: Store): void {
  app.post('/api/v1/assets', async (request, reply) => {
    if (!request.isMultipart()) {
      return reply.status(201).send({ asset: await assets.createFromUrl(request.clientId, request.body) });
    }
    // Each file streams to disk as it arrives; nothing is held in memory.
    const received: { file: WrittenFile; name: string }[] = [];
    try {
      for await (const part of request.parts()) {
        if (part.type !== 'file') continue;
        if (part.fieldname !== 'files') {
          part.file.resume();
          throw new Invalid(part.fieldname, 'unexpected file field; upload files in the "files" field');
        }
        if (received.length >= MAX_FILES) throw new Invalid('files', `at most ${MAX_FILES} files per request`);
        const file = await assets.receive(part.file);
        received.push({ file, name: cleanName(part.filename, `upload-${received.length + 1}`) });
      }
    } catch (error) {
      await Promise.all(received.map((r) => fsp.rm(r.file.path, { force: true })));
      throw error;
    }
    if (received.length === 0) throw new Invalid('files', 'no file uploaded; send multipart/form-data with one or more "files" parts');
    return reply.status(201).send({ assets: await assets.createFromUploads(request.clientId, received) });
  });

  app.get<{ Params: { id: string } }>('/api/v1/assets/:id', async (request) => ({ asset: await assets.get(request.clientId, request.params.id) }));

  app.get('/api/v1/assets', async (request) => assets.list(request.clientId, request.query));

  app.get<{ Params: { id: string } }>('/api/v1/assets/:id/download', async (request, reply) => {
    const row = request.signedAssetId === request.params.id ? await assets.findRowById(request.params.id) : await assets.findRow(request.clientId, request.params.id);
    const size = Number(row.bytes);
    const etag = `"${row.sha256}"`;
    const cacheForever = 'private, max-age=31536000, immutable';
    // A client holding this ETag already has the bytes (with presigned downloads, 304 also
    // spares it the redirect).
    if (request.headers['if-none-match'] === etag) return reply.status(304).header('etag', etag).header('cache-control', cacheForever).send();
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
      return reply.status(416).header('content-range', `bytes */${size}`).send({ error: 'Range not satisfiable.', code: 'range_not_satisfiable' });
    }
    reply.header('content-type', row.mime_type).header('content-disposition', contentDisposition(row.name));
    if (range) {
      reply.status(206).header('content-range', `bytes ${range.start}-${range.end}/${size}`).header('content-length', range.end - range.start + 1);
      return reply.send(await store.get(row.storage_key, range));
    }
    reply.header('content-length', size);
    return reply.send(await store.get(row.storage_key));
  });
}
