import fs from 'node:fs';
import { createRequire } from 'node:module';
import type { S3StoreOptions } from '../src/assets/index.ts';
import { tempDir } from './helpers.ts';

/** s3rver checks SigV4 signatures (headers and presigned query strings) against this pair. */
const ACCESS_KEY_ID = 'S3RVER';
const SECRET_ACCESS_KEY = 'S3RVER';

export interface S3Server {
  endpoint: string;
  bucket: string;
  /** Store options for the bucket (path-style, fixed region, the server's keys). */
  options: S3StoreOptions;
  /** The same as ZHINIAN_S3_* variables, for `startStack({ env })`. */
  env: Record<string, string>;
  close(): Promise<void>;
}

/**
 * An S3-compatible server (s3rver) in this process on 127.0.0.1, port 0, keeping objects in a
 * fresh temp dir, with one empty bucket.
 */
export async function startS3Server(opts: { bucket?: string; prefix?: string } = {}): Promise<S3Server> {
  // s3rver is CommonJS without types.
  const require = createRequire(import.meta.url);
  const S3rver = require('s3rver');
  fixRangeEndingAtZero(require('s3rver/lib/stores/filesystem'));
  const dir = tempDir('zhinian-s3rver-');
  const bucket = opts.bucket ?? 'zhinian-test';
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir, configureBuckets: [{ name: bucket, configs: [] }] });
  const { port } = (await server.run()) as { port: number };
  const endpoint = `http://127.0.0.1:${port}`;
  const prefix = opts.prefix ?? 'assets/';
  return {
    endpoint,
    bucket,
    options: {
      bucket,
      endpoint,
      region: 'us-east-1',
      accessKeyId: ACCESS_KEY_ID,
      secretAccessKey: SECRET_ACCESS_KEY,
      forcePathStyle: true,
      presign: false,
      prefix,
    },
    env: {
      ZHINIAN_S3_BUCKET: bucket,
      ZHINIAN_S3_ENDPOINT: endpoint,
      ZHINIAN_S3_REGION: 'us-east-1',
      ZHINIAN_S3_ACCESS_KEY_ID: ACCESS_KEY_ID,
      ZHINIAN_S3_SECRET_ACCESS_KEY: SECRET_ACCESS_KEY,
      ZHINIAN_S3_FORCE_PATH_STYLE: 'true',
      ZHINIAN_S3_PREFIX: prefix,
    },
    async close() {
      await server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

let fixed = false;

/**
 * s3rver 3.7 reads `Range: bytes=0-0` as the whole object (`options.end || Infinity` in
 * FilesystemStore.getObject); S3 answers the first byte. Narrow its answer to that byte so the
 * conformance suite checks our store, not the fake. (It also lacks suffix ranges, `bytes=-N`,
 * which our store never sends: the API resolves them to a start and end first.)
 */
function fixRangeEndingAtZero(FilesystemStore: { prototype: Record<string, any> }) {
  if (fixed) return;
  fixed = true;
  const getObject = FilesystemStore.prototype.getObject;
  FilesystemStore.prototype.getObject = async function (this: any, bucket: string, key: string, options?: { start?: number; end?: number }) {
    const object = await getObject.call(this, bucket, key, options);
    if (options?.end === 0 && object?.content) {
      object.content.destroy();
      object.content = fs.createReadStream(this.getResourcePath(bucket, key, 'object'), { start: 0, end: 0 });
      object.range = { start: 0, end: 0 };
    }
    return object;
  };
}
