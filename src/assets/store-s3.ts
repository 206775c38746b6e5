import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { CompletedPart, S3Client } from '@aws-sdk/client-s3';
import contentDisposition from 'content-disposition';
import type { S3StorageConfig } from '../config/index.ts';
import type { Store } from './store.ts';

/**
 * 8 MiB parts, 4 in flight. Each part is streamed from its byte range of the file rather than
 * buffered: lib-storage's `Upload` copies every part into a fresh 8 MiB Buffer, and those
 * survive until a major GC, so a 60 MB upload grew RSS by 44-108 MB (measured); ranged file
 * streams keep it flat. S3 allows 10,000 parts: objects up to ~80 GB, far above the upload cap.
 */
const PART_BYTES = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT = 4;
/** A part is re-sent from the file on failure; the SDK never retries a streamed body itself. */
const PART_ATTEMPTS = 3;

export type S3StoreOptions = Omit<S3StorageConfig, 'kind'>;

/**
 * Keys as `<prefix><key>` objects in one bucket of an S3-compatible service. The SDK is
 * imported here, not at the top: it costs ~24 MB and ~0.3 s per process, which local-disk
 * installs should not pay (the bundle keeps packages external, so a static import would load it).
 */
export async function createS3Store(options: S3StoreOptions): Promise<Store> {
  const [sdk, { getSignedUrl }] = await Promise.all([import('@aws-sdk/client-s3'), import('@aws-sdk/s3-request-presigner')]);
  const { DeleteObjectCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, PutObjectCommand, S3Client } = sdk;
  const prefix = normalizePrefix(options.prefix);
  const bucket = options.bucket;
  const client = new S3Client({
    region: options.region,
    endpoint: options.endpoint ?? undefined,
    forcePathStyle: options.forcePathStyle,
    // Unset: the SDK's default chain (env, shared files, instance role).
    credentials: options.accessKeyId && options.secretAccessKey ? { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey } : undefined,
    // The SDK's default CRC32 trailers (aws-chunked streamed bodies) are rejected or stored
    // verbatim by many S3-compatible servers (s3rver among them). Streamed bodies are then sent
    // as UNSIGNED-PAYLOAD, so every PUT carries a Content-MD5 the server checks instead.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // Each download streamed through the API holds one socket until the client has read it;
    // the default 50 would queue the 51st download behind the slowest reader.
    requestHandler: { connectionTimeout: 10_000, httpAgent: { keepAlive: true, maxSockets: 256 }, httpsAgent: { keepAlive: true, maxSockets: 256 } },
  });
  const objectKey = (key: string) => {
    if (!key || key.startsWith('/') || key.split('/').includes('..')) throw new Error(`bad storage key ${key}`);
    return prefix + key;
  };

  const store: Store = {
    name: 's3',
    async putFile(key, filePath) {
      const { size } = await fsp.stat(filePath);
      const target = { client, sdk, bucket, key: objectKey(key), filePath, size };
      if (size > PART_BYTES) await putMultipart(target);
      else {
        const ContentMD5 = await md5OfRange(filePath, 0, size);
        await withAttempts(() => client.send(new PutObjectCommand({ Bucket: bucket, Key: target.key, Body: fileRange(filePath, 0, size), ContentLength: size, ContentMD5 })));
      }
      await fsp.rm(filePath, { force: true });
    },
    async get(key, range) {
      const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: objectKey(key), Range: range ? `bytes=${range.start}-${range.end}` : undefined }));
      // In Node the body is the response stream itself (an IncomingMessage): nothing buffered.
      const body = out.Body as Readable;
      // The route has already promised a Content-Length; a server that ignores or widens the
      // range must fail the request rather than send the wrong bytes.
      if (range && !out.ContentRange?.startsWith(`bytes ${range.start}-${range.end}/`)) {
        body.destroy();
        throw new Error(`storage answered ${out.ContentRange ?? 'the whole object'} to a request for bytes ${range.start}-${range.end} of ${key}`);
      }
      return body;
    },
    async stat(key) {
      try {
        const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey(key) }));
        return { bytes: head.ContentLength ?? 0 };
      } catch (error) {
        if (isNotFound(error)) return null;
        throw error;
      }
    },
    async delete(key) {
      // Deleting a missing key succeeds in S3, as `rm --force` does locally.
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: objectKey(key) }));
    },
    async check() {
      await client.send(new HeadBucketCommand({ Bucket: bucket }));
    },
  };
  if (options.presign) {
    store.presignGet = (key, opts) =>
      getSignedUrl(
        client,
        new GetObjectCommand({
          Bucket: bucket,
          Key: objectKey(key),
          // The object itself carries no metadata; the URL asks S3 for our download headers.
          ResponseContentType: opts.contentType,
          ResponseContentDisposition: contentDisposition(opts.fileName),
        }),
        { expiresIn: opts.expiresInSeconds },
      );
  }
  return store;
}

interface UploadTarget {
  client: S3Client;
  sdk: typeof import('@aws-sdk/client-s3');
  bucket: string;
  key: string;
  filePath: string;
  size: number;
}

/**
 * Multipart upload, each part a ranged read of the file. On any failure the other parts are
 * cancelled and the upload aborted, so no orphaned parts stay billed.
 */
async function putMultipart({ client, sdk, bucket, key, filePath, size }: UploadTarget): Promise<void> {
  const { UploadId } = await client.send(new sdk.CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
  const partCount = Math.ceil(size / PART_BYTES);
  const parts: CompletedPart[] = [];
  const cancel = new AbortController();
  let next = 0;
  const sendParts = async () => {
    while (next < partCount && !cancel.signal.aborted) {
      const index = next++;
      const start = index * PART_BYTES;
      const bytes = Math.min(PART_BYTES, size - start);
      // A second read of 8 MiB from the page cache is cheaper than an undetected bad part.
      const ContentMD5 = await md5OfRange(filePath, start, bytes);
      const { ETag } = await withAttempts(
        () =>
          client.send(
            new sdk.UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: index + 1, Body: fileRange(filePath, start, bytes), ContentLength: bytes, ContentMD5 }),
            { abortSignal: cancel.signal },
          ),
        cancel.signal,
      );
      parts[index] = { PartNumber: index + 1, ETag };
    }
  };
  try {
    const results = await Promise.allSettled(
      Array.from({ length: Math.min(PARTS_IN_FLIGHT, partCount) }, () =>
        sendParts().catch((error) => {
          cancel.abort();
          throw error;
        }),
      ),
    );
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    await client.send(new sdk.CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId, MultipartUpload: { Parts: parts } }));
  } catch (error) {
    await client.send(new sdk.AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId })).catch(() => {});
    throw error;
  }
}

/** `bytes` bytes of the file from `start`, read as they are sent. */
function fileRange(filePath: string, start: number, bytes: number): Readable | Buffer {
  // An empty range cannot be expressed as a read stream (`end` is inclusive).
  return bytes === 0 ? Buffer.alloc(0) : fs.createReadStream(filePath, { start, end: start + bytes - 1, highWaterMark: 256 * 1024 });
}

async function md5OfRange(filePath: string, start: number, bytes: number): Promise<string> {
  const hash = createHash('md5');
  if (bytes > 0) for await (const chunk of fs.createReadStream(filePath, { start, end: start + bytes - 1, highWaterMark: 256 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('base64');
}

async function withAttempts<T>(send: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await send();
    } catch (error) {
      const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      // 4xx other than 408/429 will fail the same way again.
      const final = status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429;
      if (final || attempt >= PART_ATTEMPTS || signal?.aborted) throw error;
      await new Promise((r) => setTimeout(r, 250 * attempt));
    }
  }
}

/** `assets`, `/assets/` and `assets/` all mean the folder `assets/`; empty means the root. */
function normalizePrefix(prefix: string | null): string {
  const trimmed = (prefix ?? '').replace(/^\/+|\/+$/g, '');
  return trimmed ? `${trimmed}/` : '';
}

function isNotFound(error: unknown): boolean {
  return (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode === 404;
}
