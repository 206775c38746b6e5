/**
 * Baseline servers, run as child processes by the bench:
 *   fastify          — bare Fastify 5, one route (GET and POST /x) answering a constant JSON
 *   http <file> <dir> — plain node:http: GET /file pipes fs.createReadStream(<file>), GET /warm is tiny,
 *                       POST /upload pipes the request body into a new file in <dir>
 */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import Fastify from 'fastify';

const [mode, file, uploadDir] = process.argv.slice(2);
process.on('SIGTERM', () => process.exit(0));

if (mode === 'fastify') {
  const app = Fastify({ logger: false });
  const constant = { job: { id: 'job_constant', status: 'queued' } };
  app.route({ method: ['GET', 'POST'], url: '/x', handler: async () => constant });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  console.log(`baseline listening at ${url}`);
} else if (mode === 'http') {
  let n = 0;
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/warm') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    } else if (req.method === 'GET' && req.url === '/file') {
      const size = fs.statSync(file).size;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
      fs.createReadStream(file, { highWaterMark: 256 * 1024 }).pipe(res);
    } else if (req.method === 'POST' && req.url === '/upload') {
      const target = path.join(uploadDir, `upload-${n++}`);
      pipeline(req, fs.createWriteStream(target)).then(
        () => res.writeHead(201, { 'content-type': 'application/json' }).end('{"ok":true}'),
        () => res.writeHead(500).end(),
      );
    } else {
      res.writeHead(404).end();
    }
  });
  server.listen(0, '127.0.0.1', () => console.log(`baseline listening at http://127.0.0.1:${(server.address() as AddressInfo).port}`));
} else {
  console.error('usage: baseline-server.ts fastify | http <file> <uploadDir>');
  process.exit(2);
}
