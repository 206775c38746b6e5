import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { consoleDir } from './files.ts';

const TYPES: Record<string, string> = { '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml' };

/**
 * The console's own files (static/) and htmx from its npm package: every asset is served by
 * us, nothing from a CDN. A handful of small files, read once and kept in memory with an ETag.
 */
function loadFiles(): Map<string, { body: Buffer; type: string; etag: string }> {
  const files = new Map<string, { body: Buffer; type: string; etag: string }>();
  const add = (name: string, file: string) => {
    const body = fs.readFileSync(file);
    files.set(name, { body, type: TYPES[path.extname(name)] ?? 'application/octet-stream', etag: `"${createHash('sha256').update(body).digest('hex').slice(0, 32)}"` });
  };
  const staticDir = path.join(consoleDir, 'static');
  for (const name of fs.readdirSync(staticDir)) add(name, path.join(staticDir, name));
  add('htmx.min.js', createRequire(import.meta.url).resolve('htmx.org/dist/htmx.min.js'));
  return files;
}

export function registerStatic(admin: FastifyInstance): void {
  const files = loadFiles();
  admin.get<{ Params: { name: string } }>('/static/:name', { config: { access: 'console-public' } }, async (request, reply) => {
    const file = files.get(request.params.name);
    if (!file) return reply.callNotFound();
    reply.header('etag', file.etag).header('cache-control', 'no-cache').header('content-type', file.type);
    if (request.headers['if-none-match'] === file.etag) return reply.status(304).send();
    return reply.send(file.body);
  });
}
