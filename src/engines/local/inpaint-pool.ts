/**
 * OpenCV inpainting off the main thread. Loading OpenCV.js takes most of a second, so one warm
 * worker is kept per process (unref'd while idle, so it never holds the process open). A job
 * takes the warm worker when it is free and starts another one when it is not; cancelling a job
 * terminates only that job's worker.
 */
import { Worker } from 'node:worker_threads';
import { Aborted } from '../../lib/abort.ts';

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

interface Reply {
  id?: number;
  type?: string;
  loadMs?: number;
  ok?: boolean;
  data?: Uint8Array;
  alpha?: Uint8Array;
  error?: string;
  heapBytes?: number;
}

class InpaintWorker {
  readonly worker: Worker;
  readonly ready: Promise<void>;
  dead = false;
  loadMs: number | null = null;
  private pending: { id: number; resolve(r: Reply): void; reject(e: Error): void } | null = null;
  private nextId = 1;

  constructor() {
    // The worker is plain .mjs: it needs none of the parent's loaders (tsx).
    this.worker = new Worker(WORKER_URL, { execArgv: [] });
    this.ready = new Promise<void>((resolve, reject) => {
      const onMessage = (msg: Reply): void => {
        if (msg.type === 'ready') {
          this.loadMs = msg.loadMs ?? null;
          resolve();
          return;
        }
        const p = this.pending;
        if (p && msg.id === p.id) {
          this.pending = null;
          p.resolve(msg);
        }
      };
      const onFailure = (err: Error): void => {
        this.dead = true;
        reject(err);
        const p = this.pending;
        this.pending = null;
        p?.reject(err);
      };
      this.worker.on('message', onMessage);
      this.worker.on('error', (err) => onFailure(err instanceof Error ? err : new Error(String(err))));
      this.worker.on('exit', (code) => onFailure(new Error(`inpaint worker exited (code ${code})`)));
    });
    // An unobserved failure while warming must not become an unhandled rejection.
    this.ready.catch(() => undefined);
  }

  run(job: InpaintJob): Promise<Reply> {
    if (this.dead) return Promise.reject(new Error('inpaint worker is not running'));
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.pending = { id, resolve, reject };
      const transfer = [job.data.buffer, job.mask.buffer, ...(job.alpha ? [job.alpha.buffer] : [])] as ArrayBuffer[];
      this.worker.postMessage({ id, ...job }, transfer);
    });
  }

  terminate(): void {
    this.dead = true;
    void this.worker.terminate();
  }
}

let warm: InpaintWorker | null = null;

function acquire(): InpaintWorker {
  if (warm && !warm.dead) {
    const w = warm;
    warm = null;
    w.worker.ref();
    return w;
  }
  const w = new InpaintWorker();
  return w;
}

function release(w: InpaintWorker, heapBytes = 0): void {
  if (w.dead) return;
  if (warm && !warm.dead) {
    w.terminate();
    return;
  }
  if (heapBytes > MAX_WARM_HEAP_BYTES) {
    w.terminate();
    return;
  }
  w.worker.unref();
  warm = w;
}

/** Starts the warm worker now (OpenCV load) so the first inpaint does not pay for it. */
export function prewarmInpaint(): Promise<{ loadMs: number | null }> {
  if (!warm || warm.dead) {
    // Ref'd while loading (whoever awaits this keeps the process up); unref'd once idle and ready.
    const w = new InpaintWorker();
    warm = w;
    w.ready.then(
      () => {
        if (warm === w) w.worker.unref();
      },
      () => undefined,
    );
  }
  const w = warm;
  return w.ready.then(() => ({ loadMs: w.loadMs }));
}

/** Terminates the warm worker (tests, shutdown). */
export async function shutdownInpaint(): Promise<void> {
  const w = warm;
  warm = null;
  if (w) await w.worker.terminate();
}

/**
 * Runs Telea inpainting in a worker. Buffers in `job` are transferred (unusable afterwards).
 * Rejects with `Aborted` as soon as `signal` aborts; the worker is terminated then.
 */
export async function inpaintInWorker(job: InpaintJob, signal: AbortSignal): Promise<InpaintResult> {
  if (signal.aborted) throw new Aborted();
  const w = acquire();
  let rejectAborted!: (err: Error) => void;
  const aborted = new Promise<never>((_, reject) => {
    rejectAborted = reject;
  });
  aborted.catch(() => undefined);
  const onAbort = (): void => {
    w.terminate();
    rejectAborted(new Aborted());
  };
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    await Promise.race([w.ready, aborted]);
    const reply = await Promise.race([w.run(job), aborted]);
    release(w, reply.heapBytes);
    if (!reply.ok || !reply.data) throw new Error(`OpenCV inpaint failed: ${reply.error ?? 'no result'}`);
    return { data: reply.data, alpha: reply.alpha };
  } catch (err) {
    if (signal.aborted) throw new Aborted();
    throw err;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
