import fsp from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { Busboy, type BusboyInstance } from '@fastify/busboy';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { cleanName, type WrittenFile } from '../assets/index.ts';
import { ERR } from '../lib/error-codes.ts';
import { AppError, Invalid } from '../lib/errors.ts';

/** With the whole body received, this long without the parser reading on means it is stuck. */
const STALL_MS = 1_000;

export interface ReceivedFile {
  file: WrittenFile;
  name: string;
}

/** Thrown when the client went away mid-upload: nobody is left to answer. */
class ClientGone extends AppError {
  constructor() {
    super(ERR.request_aborted, 'The request was aborted.');
  }
}

/** Uploads being received, per app: its close waits for their temp files to be removed. */
const receiving = new WeakMap<FastifyInstance, Set<Promise<unknown>>>();

/**
 * Fastify must leave multipart bodies unread: `receiveFiles` streams them itself. On close (the
 * server has stopped, and uploads still arriving past the grace period have been cut off), the
 * app waits until every cut-off upload has removed its temp files: the process must not exit
 * (and leave them behind) first.
 */
export function registerMultipartPassThrough(app: FastifyInstance): void {
  app.addContentTypeParser('multipart/form-data', (_request, _payload, done) => done(null, undefined));
  const uploads = new Set<Promise<unknown>>();
  receiving.set(app, uploads);
  app.addHook('onClose', async () => {
    await Promise.allSettled(uploads);
  });
}

/** Tracks one upload of `request`'s app until it has settled (files stored, or removed). */
function tracked<T>(request: FastifyRequest, upload: Promise<T>): Promise<T> {
  const uploads = receiving.get(request.server);
  if (!uploads) return upload;
  const forget = () => {
    uploads.delete(settled);
  };
  const settled: Promise<void> = upload.then(forget, forget);
  uploads.add(settled);
  return upload;
}

export function isMultipart(request: FastifyRequest): boolean {
  return /^multipart\//i.test(request.headers['content-type'] ?? '');
}

/**
 * Streams the `files` parts of a multipart body to temp files, one after the other, as they
 * arrive (nothing is held in memory). Settles exactly once, and only when nothing is left
 * open: on the closing boundary (all files written), or on the first problem, after the file
 * being written is closed and every temp file removed. Problems: a body that ends before its
 * closing boundary (known as soon as the declared length has arrived), a client that goes
 * away, more than `maxFiles` files, an empty file, a file part in another field.
 */
export function receiveFiles(request: FastifyRequest, opts: { maxFiles: number; receive: (stream: Readable) => Promise<WrittenFile> }): Promise<ReceivedFile[]> {
  return tracked(request, streamFiles(request, opts));
}

function streamFiles(request: FastifyRequest, opts: { maxFiles: number; receive: (stream: Readable) => Promise<WrittenFile> }): Promise<ReceivedFile[]> {
  let parser: BusboyInstance;
  try {
    // One file more than allowed still reaches us, so we can say what is wrong.
    parser = Busboy({ headers: request.headers as { 'content-type': string }, limits: { files: opts.maxFiles + 1, fields: 20, parts: 40, fieldSize: 64 * 1024 } });
  } catch {
    return Promise.reject(new Invalid('Content-Type', 'must be multipart/form-data with a boundary'));
  }
  const raw = request.raw;
  const received: ReceivedFile[] = [];
  let written = Promise.resolve();
  let current: Readable | null = null;
  let count = 0;
  let failure: Error | null = null;

  return new Promise<ReceivedFile[]>((resolve, reject) => {
    // busboy can get stuck on a part it skips (one without a form-data disposition or with a
    // line break in its file name, of more than 16 KiB, ending in the chunk that filled its
    // buffer): it stops reading — the body stays paused, or has all arrived — and never
    // finishes. No progress for a while in that state means that: answer instead of hanging.
    // A client still sending (the body flowing, waiting for bytes) is the request timeout's
    // business; while a file is being written, a slow disk is the reason, and we wait.
    let lastProgressAt = Date.now();
    const watchdog = setInterval(() => {
      const parserWaits = raw.isPaused() || raw.complete;
      if (parserWaits && current === null && Date.now() - lastProgressAt > STALL_MS) fail(new Invalid('files', 'the multipart body is malformed'));
    }, STALL_MS / 4);
    const fail = (error: Error) => {
      if (failure) return;
      failure = error;
      clearInterval(watchdog);
      raw.unpipe(parser);
      current?.destroy(error);
      // Read and drop whatever the client still sends, so the request ends and the connection
      // can close once we have answered; Node would not do it for a body that was being piped.
      // The lingering close (lingering-close.ts) bounds how much and how long.
      raw.resume();
      written.finally(async () => {
        await Promise.all(received.map((r) => fsp.rm(r.file.path, { force: true })));
        reject(error);
      });
    };

    parser.on('file', (field: string, stream: Readable, filename: string | undefined) => {
      // A part cut short errors its stream; the write below (or fail()) deals with it.
      stream.on('error', () => {});
      if (failure) return void stream.resume();
      if (field !== 'files') {
        stream.resume();
        return fail(new Invalid(field, 'unexpected file field; upload files in the "files" field'));
      }
      if (++count > opts.maxFiles) {
        stream.resume();
        return fail(new Invalid('files', `at most ${opts.maxFiles} files per request`));
      }
      const index = count - 1;
      written = written.then(async () => {
        if (failure) return void stream.resume();
        current = stream;
        try {
          const file = await opts.receive(stream);
          received.push({ file, name: cleanName(filename, `upload-${index + 1}`) });
          if (file.bytes === 0) fail(new Invalid(`files[${index}]`, 'is empty (0 bytes)'));
        } catch (error) {
          fail(failure ?? (error as Error));
        } finally {
          current = null;
        }
      });
    });
    parser.on('partsLimit', () => fail(new Invalid('files', 'the form has too many parts')));
    parser.on('fieldsLimit', () => fail(new Invalid('files', 'the form has too many fields')));
    parser.on('error', () => fail(new Invalid('files', 'the multipart body is malformed or ended before its closing boundary')));
    parser.on('finish', () => {
      void written.then(() => {
        if (failure) return;
        if (received.length === 0) return fail(new Invalid('files', 'no file uploaded; send multipart/form-data with one or more "files" parts'));
        clearInterval(watchdog);
        resolve(received);
      });
    });
    raw.on('close', () => {
      if (!raw.complete) fail(new ClientGone());
    });
    raw.on('data', () => (lastProgressAt = Date.now()));
    raw.pipe(parser);
  });
}
