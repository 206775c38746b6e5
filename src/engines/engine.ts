/**
 * The engine seam. Engines know nothing about HTTP, the database or storage: the worker hands
 * them input files on local disk and takes output files back from a work directory.
 */
import type { Capability, JobParams } from '../contract/index.ts';
import { retriedByDefault, type JobErrorCode } from '../lib/error-codes.ts';

export type InputRole = 'image' | 'mask' | 'video' | 'audio';

export interface EngineInput {
  role: InputRole;
  /** A file on local disk, already fetched and size-checked by the worker. */
  path: string;
  mimeType: string;
  label?: string;
  /** Where it came from: one of the client's assets, or a URL. */
  assetId?: string;
  sourceUrl?: string;
}

export interface EngineRequest {
  jobId: string;
  capability: Capability;
  prompt: string | null;
  params: JobParams;
  /** In request order: inputAssetIds, inputUrls, imageUrls, materials. */
  inputs: EngineInput[];
}

export interface EngineOutput {
  /** A file the engine wrote inside `workDir`. */
  path: string;
  kind: 'image' | 'video';
  mimeType: string;
  /** Where a remote engine's result came from (without its signed query). */
  sourceUrl?: string;
  /** What the engine already learned of the file, so it is not probed twice. */
  probe?: { mimeType: string; kind: 'image' | 'video' | 'audio' | 'file'; width: number | null; height: number | null; durationSeconds: number | null };
}

export interface RunContext {
  signal: AbortSignal;
  /** 0–100; the worker throttles writes. */
  onProgress(percent: number): void;
  /** A private, empty directory the worker removes afterwards. */
  workDir: string;
  /**
   * The most pixels an input image may have (ZHINIAN_MAX_INPUT_PIXELS): the worker already
   * checked every input's header; engines pass it to sharp as `limitInputPixels` when decoding
   * one. Default: sharp's own 268402689.
   */
  maxInputPixels?: number;
}

/** An engine that does its work in this process (the local engine; bench engines). */
export interface LocalEngine {
  readonly kind?: 'local';
  readonly name: string;
  readonly capabilities: readonly Capability[];
  run(request: EngineRequest, ctx: RunContext): Promise<EngineOutput[]>;
}

/** Saved on the job right after submit, so a worker inheriting the job resumes polling instead of resubmitting. */
export interface EngineHandle {
  engine: string;
  /** The provider's task id, always a string (Jimeng's 19-digit ids do not fit a JS number). */
  taskId: string;
  /** ISO time of the submit. */
  submittedAt: string;
  meta?: Record<string, unknown>;
}

export interface RemoteInput extends EngineInput {
  /** A short-lived signed URL the provider can fetch without an API key. */
  publicUrl: string;
  width: number | null;
  height: number | null;
}

export interface RemoteRequest {
  jobId: string;
  capability: Capability;
  prompt: string | null;
  params: JobParams;
  inputs: RemoteInput[];
}

export type TaskStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'expired' | 'cancelled';

export interface PollResult {
  status: TaskStatus;
  progress: number | null;
  /** The provider's own status word, for logs. */
  providerStatus: string;
  /** On success: result URLs (they expire, so the worker re-hosts them) or inline bytes. */
  outputs?: { kind: 'image' | 'video'; url?: string; data?: Buffer }[];
  error?: { code: JobErrorCode; message: string; providerCode?: string | number; resubmittable?: boolean };
}

/**
 * An engine whose work happens at a provider: submit once, then poll. `submit` and `poll` throw
 * (EngineError) only for call-level trouble — network, 429, 5xx, auth, rejected parameters; a
 * task that ended badly is returned as a PollResult.
 */
export interface RemoteEngine {
  readonly kind: 'remote';
  readonly name: string;
  readonly capabilities: readonly Capability[];
  /** Tasks this engine may have in flight across all workers. */
  readonly maxConcurrency: number;
  submit(request: RemoteRequest, opts: { signal: AbortSignal; idempotencyKey: string }): Promise<EngineHandle>;
  poll(handle: EngineHandle, opts: { signal: AbortSignal }): Promise<PollResult>;
  cancel(handle: EngineHandle): Promise<'cancelled' | 'not_supported' | 'too_late'>;
  /** Delay before poll number `pollCount` (1-based), following the provider's guidance. */
  pollDelayMs(pollCount: number): number;
}

export type Engine = LocalEngine | RemoteEngine;

export function isRemoteEngine(engine: Engine): engine is RemoteEngine {
  return engine.kind === 'remote';
}

export interface EngineErrorOptions {
  /**
   * May succeed if tried again (timeouts, 5xx, connection errors). Unset: the catalogue's answer
   * for the code (lib/error-codes.ts); set it only for a code the catalogue marks `sometimes`.
   */
  retryable?: boolean;
  /** Too many requests or concurrent tasks: wait `retryAfterMs` (or back off) without using an attempt. */
  rateLimited?: boolean;
  retryAfterMs?: number;
  /** A deadline passed: the job becomes `expired`, not `failed`. */
  expired?: boolean;
  providerCode?: string | number;
  httpStatus?: number;
}

/**
 * Engines fail with this. `retryable` errors (timeouts, 5xx, 429) may run again on another
 * attempt; others fail the job at once. A passed deadline is `expired`, not `failed`.
 */
export class EngineError extends Error {
  /** Whether another try may succeed: `options.retryable`, else the catalogue's default for the code. */
  readonly retryable: boolean;

  constructor(
    readonly code: JobErrorCode,
    message: string,
    readonly options: EngineErrorOptions = {},
  ) {
    super(message);
    this.name = 'EngineError';
    this.retryable = options.retryable ?? retriedByDefault(code);
  }
}
