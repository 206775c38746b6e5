import type { Readable } from 'node:stream';

/**
 * Where asset bytes live. Keys are opaque paths chosen by the asset service. Local disk
 * (`store-local.ts`) or S3-compatible storage (`store-s3.ts`).
 */
export interface Store {
  readonly name: string;
  /** Moves (or uploads) a finished local file under `key`. The file is gone afterwards. */
  putFile(key: string, filePath: string): Promise<void>;
  /** Streams the object, or the inclusive byte range `[start, end]` of it. */
  get(key: string, range?: { start: number; end: number }): Promise<Readable>;
  /** Size in bytes, or null when missing. */
  stat(key: string): Promise<{ bytes: number } | null>;
  delete(key: string): Promise<void>;
  /** A path on this machine when the object is a local file (lets the worker skip a copy). */
  localPath?(key: string): string;
  /**
   * A short-lived URL that serves the object straight from the store with the given download
   * headers, no API key needed. Present only when downloads should redirect there (S3 with
   * `ZHINIAN_S3_PRESIGN=true`); otherwise downloads stream through the API.
   */
  presignGet?(key: string, opts: { expiresInSeconds: number; fileName: string; contentType: string }): Promise<string>;
  /** Throws when the store cannot be used (for `/readyz`). */
  check(): Promise<void>;
}
