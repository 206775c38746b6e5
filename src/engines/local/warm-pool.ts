/**
 * Warm helpers for work that must be stoppable at once: a pool of long-lived helper processes or
 * worker threads, each running one request at a time. Starting one costs a module load (sharp,
 * OpenCV.js), so idle helpers are kept warm (unref'd, so they never hold the process open) and a
 * request takes an idle one or starts a new one. Cancelling a request kills its helper, which
 * stops the work mid-way; a pool may then start a fresh warm one in the background.
 *
 * The wire protocol of every helper: `{ type: 'ready', loadMs }` once it has loaded, then for
 * each request `{ id, … }` one reply `{ id, … }`.
 *
 * Built on it: sharp-child.ts (child processes for libvips) and inpaint-pool.ts (a worker thread
 * for OpenCV).
 */
import { fork, type ForkOptions } from 'node:child_process';
import { Worker, type WorkerOptions } from 'node:worker_threads';
import { Aborted } from '../../lib/abort.ts';

export interface HelperReply {
  id?: number;
  type?: string;
  loadMs?: number;
}

/** What a helper's transport tells the helper. */
interface HelperEvents<R> {
  message(msg: R): void;
  /** It failed or exited: no more replies. */
  failed(err: Error): void;
  /** The process or thread is gone (its exit seen, or it never started). */
  gone(): void;
}

/** A helper's transport: a child process or a worker thread. */
interface HelperPort {
  readonly pid: number | undefined;
  send(message: object, transfer: readonly ArrayBuffer[], onError: (err: Error) => void): void;
  /** Whether it holds the parent's event loop open. */
  hold(on: boolean): void;
  /** Stops it now; its `gone` follows. */
  stop(): void;
}

export type StartHelper<R> = (events: HelperEvents<R>) => HelperPort;

/** One helper: its load, its one pending request, its end. */
class WarmHelper<R extends HelperReply> {
  readonly ready: Promise<void>;
  /** Resolves once the process or thread has exited. */
  readonly exited: Promise<void>;
  dead = false;
  loadMs: number | null = null;
  private gone = false;
  private pending: { id: number; resolve(r: R): void; reject(e: Error): void } | null = null;
  private nextId = 1;
  private readonly port: HelperPort;

  constructor(
    start: StartHelper<R>,
    private readonly notRunning: () => Error,
  ) {
    let onReady!: () => void;
    let onLoadFailed!: (err: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => {
      onReady = resolve;
      onLoadFailed = reject;
    });
    let onExit!: () => void;
    this.exited = new Promise<void>((resolve) => {
      onExit = resolve;
    });
    this.port = start({
      message: (msg) => {
        if (msg.type === 'ready') {
          this.loadMs = msg.loadMs ?? null;
          onReady();
          return;
        }
        const p = this.pending;
        if (p && msg.id === p.id) {
          this.pending = null;
          p.resolve(msg);
        }
      },
      failed: (err) => {
        this.dead = true;
        onLoadFailed(err);
        const p = this.pending;
        this.pending = null;
        p?.reject(err);
      },
      gone: () => {
        this.gone = true;
        onExit();
      },
    });
    // An unobserved failure while warming must not become an unhandled rejection.
    this.ready.catch(() => undefined);
  }

  get pid(): number | undefined {
    return this.port.pid;
  }

  /** Sends `{ id, ...fields }`; resolves with its reply, rejects when the helper dies first. */
  run(fields: object, transfer: readonly ArrayBuffer[] = []): Promise<R> {
    if (this.dead) return Promise.reject(this.notRunning());
    const id = this.nextId++;
    return new Promise<R>((resolve, reject) => {
      this.pending = { id, resolve, reject };
      this.port.send({ id, ...fields }, transfer, (err) => {
        if (this.pending?.id === id) {
          this.pending = null;
          reject(err);
        }
      });
    });
  }

  /** Holds the parent's event loop open while a request runs; lets it exit while idle. */
  hold(on: boolean): void {
    if (!this.dead) this.port.hold(on);
  }

  /** Stops the helper at once; resolves once it is gone. */
  kill(): Promise<void> {
    if (!this.gone) {
      // Held until the exit is seen, so that whoever awaits it keeps the process up.
      this.port.hold(true);
      this.port.stop();
    }
    this.dead = true;
    return this.exited;
  }
}

export interface WarmPoolOptions<R extends HelperReply> {
  start: StartHelper<R>;
  /** The error of a request sent to a helper that is no longer running. */
  notRunning: () => Error;
  /** Idle helpers kept warm. */
  maxIdle: number;
  /** A helper that reports more memory than this after a request is not kept (heaps rarely shrink). */
  maxWarmBytes: number;
  /** The memory a reply reports (bytes). */
  memoryOf(reply: R): number | undefined;
  /** After a helper is lost (killed on cancel, dropped for memory), start a fresh warm one in the background. */
  replenish: boolean;
  /**
   * On cancel, reject only once the helper has exited: a helper that writes files must be gone
   * before its caller cleans up. Without it, the cancel rejects at once.
   */
  abortAwaitsExit: boolean;
}

export class WarmPool<R extends HelperReply> {
  private readonly idle: WarmHelper<R>[] = [];
  private readonly busy = new Set<WarmHelper<R>>();

  constructor(private readonly options: WarmPoolOptions<R>) {}

  private create(): WarmHelper<R> {
    return new WarmHelper(this.options.start, this.options.notRunning);
  }

  private spawnIdle(): WarmHelper<R> {
    const helper = this.create();
    helper.hold(false);
    this.idle.push(helper);
    // A warm helper that dies while idle is simply dropped.
    void helper.exited.then(() => {
      const i = this.idle.indexOf(helper);
      if (i >= 0) this.idle.splice(i, 1);
    });
    return helper;
  }

  private acquire(): WarmHelper<R> {
    // The most recently used helper first.
    let helper = this.idle.pop();
    while (helper?.dead) helper = this.idle.pop();
    helper ??= this.create();
    helper.hold(true);
    this.busy.add(helper);
    return helper;
  }

  private release(helper: WarmHelper<R>, memoryBytes = 0): void {
    this.busy.delete(helper);
    if (helper.dead) return;
    for (let i = this.idle.length - 1; i >= 0; i--) if (this.idle[i]!.dead) this.idle.splice(i, 1);
    if (this.idle.length >= this.options.maxIdle || memoryBytes > this.options.maxWarmBytes) {
      void helper.kill();
      if (this.options.replenish && this.idle.length === 0) this.spawnIdle();
      return;
    }
    helper.hold(false);
    this.idle.push(helper);
  }

  /** Starts a warm helper now (its module load) so the first request does not pay for it. */
  prewarm(): Promise<{ loadMs: number | null }> {
    let helper = this.idle.find((h) => !h.dead);
    if (!helper) {
      // Held while loading (whoever awaits this keeps the process up); let go once ready and idle.
      const fresh = this.spawnIdle();
      fresh.hold(true);
      void fresh.ready.then(
        () => {
          if (this.idle.includes(fresh)) fresh.hold(false);
        },
        () => undefined,
      );
      helper = fresh;
    }
    const warm = helper;
    return warm.ready.then(() => ({ loadMs: warm.loadMs }));
  }

  /** Kills every helper, idle or busy (tests, shutdown). */
  async shutdown(): Promise<void> {
    const all = [...this.idle, ...this.busy];
    this.idle.length = 0;
    await Promise.all(all.map((h) => h.kill()));
  }

  /** Pids of the helpers running a request now (tests, diagnostics). */
  busyPids(): number[] {
    return [...this.busy].flatMap((h) => (h.pid === undefined ? [] : [h.pid]));
  }

  /**
   * Runs one request (`{ id, ...fields }`) on a helper and resolves with its reply. Rejects with
   * `Aborted` when `signal` aborts (the helper is killed), and with the helper's failure when it
   * dies first. `transfer`: buffers moved to a worker thread (unusable afterwards).
   */
  run(fields: object, signal: AbortSignal, transfer: readonly ArrayBuffer[] = []): Promise<R> {
    if (signal.aborted) return Promise.reject(new Aborted());
    const helper = this.acquire();
    return new Promise<R>((resolve, reject) => {
      let settled = false;
      const onAbort = (): void => {
        if (settled) return;
        settled = true;
        this.busy.delete(helper);
        const gone = helper.kill();
        if (this.options.abortAwaitsExit) void gone.then(() => reject(new Aborted()));
        else reject(new Aborted());
        if (this.options.replenish && !this.idle.some((h) => !h.dead)) this.spawnIdle();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      helper.run(fields, transfer).then(
        (reply) => {
          if (settled) return;
          settled = true;
          signal.removeEventListener('abort', onAbort);
          this.release(helper, this.options.memoryOf(reply));
          resolve(reply);
        },
        (err: Error) => {
          if (settled) return;
          settled = true;
          signal.removeEventListener('abort', onAbort);
          this.busy.delete(helper);
          void helper.kill(); // gone already, or its channel broke
          reject(err);
        },
      );
    });
  }
}

/**
 * A helper in a child process (`fork` with IPC). `exitError`: the failure for an exit, by code or
 * signal. The script should kill itself when its IPC channel closes, so it dies with its parent.
 */
export function childProcessHelper<R>(script: string, options: ForkOptions, exitError: (code: number | null, signal: NodeJS.Signals | null) => Error): StartHelper<R> {
  return (events) => {
    const proc = fork(script, [], options);
    proc.on('message', (msg) => events.message(msg as R));
    proc.on('error', (err) => {
      events.failed(err);
      // Never started: there will be no exit event.
      if (proc.pid === undefined) events.gone();
    });
    proc.on('exit', (code, signal) => {
      events.failed(exitError(code, signal));
      events.gone();
    });
    return {
      get pid() {
        return proc.pid;
      },
      send(message, _transfer, onError) {
        proc.send(message, (err) => {
          if (err) onError(err);
        });
      },
      hold(on) {
        if (on) {
          proc.ref();
          proc.channel?.ref();
        } else {
          proc.unref();
          proc.channel?.unref();
        }
      },
      stop() {
        if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      },
    };
  };
}

/** A helper in a worker thread; `terminate()` stops it even inside synchronous (WASM) work. */
export function workerThreadHelper<R>(url: URL, options: WorkerOptions, exitError: (code: number) => Error): StartHelper<R> {
  return (events) => {
    const worker = new Worker(url, options);
    worker.on('message', (msg: R) => events.message(msg));
    worker.on('error', (err) => events.failed(err instanceof Error ? err : new Error(String(err))));
    worker.on('exit', (code) => {
      events.failed(exitError(code));
      events.gone();
    });
    return {
      pid: undefined,
      send(message, transfer, onError) {
        try {
          worker.postMessage(message, transfer as ArrayBuffer[]);
        } catch (err) {
          onError(err as Error);
        }
      },
      hold(on) {
        if (on) worker.ref();
        else worker.unref();
      },
      stop() {
        void worker.terminate();
      },
    };
  };
}
