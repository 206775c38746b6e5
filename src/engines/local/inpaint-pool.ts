/**
 * OpenCV inpainting off the main thread. Loading OpenCV.js takes most of a second, so one warm
 * worker is kept per process (unref'd while idle, so it never holds the process open). A job
 * takes the warm worker when it is free and starts another one when it is not; cancelling a job
 * terminates only that job's worker. The pool is warm-pool.ts's, shared with the sharp children.
 */
import { Aborted } from '../../lib/abort.ts';
import { WarmPool, workerThreadHelper, type HelperReply } from './warm-pool.ts';

const WORKER_URL = new URL('./inpaint-worker.mjs', import.meta.url);
/** A worker whose WASM heap grew beyond this after a job is not kept warm (heaps never shrink). */
const MAX_WARM_HEAP_BYTES = 768 * 1024 * 1024;

export interface InpaintJob {
  width: number;
  height: number;
  channels: 1 | 3;
  data: Uint8Array;
  /** 255 = repaint, 0 = keep. */
  mask: Uint8Array;
  alpha?: Uint8Array;
  radius: number;
}

export interface InpaintResult {
  data: Uint8Array;
  alpha?: Uint8Array;
}

interface Reply extends HelperReply {
  ok?: boolean;
  data?: Uint8Array;
  alpha?: Uint8Array;
  error?: string;
  heapBytes?: number;
}

const pool = new WarmPool<Reply>({
  // The worker is plain .mjs: it needs none of the parent's loaders (tsx).
  start: workerThreadHelper(WORKER_URL, { execArgv: [] }, (code) => new Error(`inpaint worker exited (code ${code})`)),
  notRunning: () => new Error('inpaint worker is not running'),
  maxIdle: 1,
  maxWarmBytes: MAX_WARM_HEAP_BYTES,
  memoryOf: (reply) => reply.heapBytes,
  // A job that needs a worker while the warm one is busy or gone pays the load itself.
  replenish: false,
  // The worker writes no files: once terminate() is called nothing it does is seen.
  abortAwaitsExit: false,
});

/** Starts the warm worker now (OpenCV load) so the first inpaint does not pay for it. */
export function prewarmInpaint(): Promise<{ loadMs: number | null }> {
  return pool.prewarm();
}

/** Terminates the workers (tests, shutdown). */
export function shutdownInpaint(): Promise<void> {
  return pool.shutdown();
}

/**
 * Runs Telea inpainting in a worker. Buffers in `job` are transferred (unusable afterwards).
 * Rejects with `Aborted` as soon as `signal` aborts; the worker is terminated then.
 */
export async function inpaintInWorker(job: InpaintJob, signal: AbortSignal): Promise<InpaintResult> {
  const transfer = [job.data.buffer, job.mask.buffer, ...(job.alpha ? [job.alpha.buffer] : [])] as ArrayBuffer[];
  try {
    const reply = await pool.run(job, signal, transfer);
    if (!reply.ok || !reply.data) throw new Error(`OpenCV inpaint failed: ${reply.error ?? 'no result'}`);
    return { data: reply.data, alpha: reply.alpha };
  } catch (err) {
    if (signal.aborted) throw new Aborted();
    throw err;
  }
}
