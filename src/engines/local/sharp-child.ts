/**
 * The local engine's long sharp (libvips) pipelines run in a child process, because a running
 * libvips pipeline cannot be interrupted — not even by terminating a worker thread, whose native
 * threads keep going. Cancelling a task SIGKILLs its child, which stops the work at once.
 *
 * Starting node and loading sharp takes a few hundred ms, so idle children are kept warm (unref'd,
 * so they never hold the process open); a task takes an idle one or starts a new one. A killed
 * child is replaced by a fresh warm one in the background. A child dies with its parent: it
 * SIGKILLs itself when its IPC channel closes.
 *
 * Tasks are plain data (see sharp-task.mjs): input → operations → output file or raw pixels.
 * Small decodes and encodes may run in this process instead (`inProcess`), where they are short
 * and the trip of raw pixels through files would cost more than the work.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Aborted } from '../../lib/abort.ts';
import { buildPipeline, type PipelineSource } from './sharp-task.mjs';

const SCRIPT = fileURLToPath(new URL('./sharp-child-process.mjs', import.meta.url));
/** Idle children kept warm: one per concurrent job, for the worker's default concurrency. */
const MAX_IDLE = 2;
/** A child whose resident memory stayed above this after a task is not kept (heaps rarely shrink). */
const MAX_WARM_RSS_BYTES = 1024 * 1024 * 1024;

/** sharp's constructor options that a task may set. */
export interface SharpInputOptions {
  limitInputPixels?: number | boolean;
  failOn?: 'none' | 'truncated' | 'error' | 'warning';
  density?: number;
}

export type SharpTaskInput =
  | { kind: 'file'; path: string }
  | { kind: 'svg'; svg: string }
  /** Raw 8-bit interleaved pixels. */
  | { kind: 'raw'; data: Buffer; width: number; height: number; channels: 1 | 2 | 3 | 4 };

/** A sharp method call with plain-data arguments; a composite overlay's input is `{ svg }` or `{ file }`. */
export type SharpOp =
  | ['rotate']
  | ['flatten', { background: string }]
  | ['resize', number, number, Record<string, unknown>]
  | ['composite', ({ input: { svg: string } | { file: string } } & Record<string, unknown>)[]]
  | ['removeAlpha']
  | ['ensureAlpha']
  | ['sharpen', Record<string, unknown>]
  | ['toColourspace', string]
  | ['greyscale']
  | ['extract', { left: number; top: number; width: number; height: number }]
  | ['png', Record<string, unknown>];

export interface SharpTask {
  input: SharpTaskInput;
  inputOptions?: SharpInputOptions;
  ops: SharpOp[];
  /** An encoded file (format from the ops), or `{ raw: true }`: the 8-bit pixels, returned as `data`. */
  output: { path: string } | { raw: true };
}

export interface SharpRunOptions {
  /**
   * Run in this process. For small images only: the work is short (so a cancel still lands
   * promptly, right after it), and moving raw pixels between processes would cost more than it.
   */
  inProcess?: boolean;
  /** A directory for raw pixels on their way between the processes (raw input or output). */
  scratchDir?: string;
}

export interface SharpTaskResult {
  width: number;
  height: number;
  channels: number;
  /** Bytes written (or returned). */
  size: number;
  /** The pixels, for `output: { raw: true }`. */
  data?: Buffer;
}

/**
 * Images up to this many pixels (a little over 1920×1080) may be decoded or encoded in this
 * process: that takes well under half a second even for noise, so a cancel still lands promptly.
 */
export const IN_PROCESS_MAX_PIXELS = 2_100_000;

/** The child exited while running a task that was not cancelled (crash, out of memory). */
export class SharpChildExited extends Error {
  constructor(detail: string) {
    super(`the image process exited unexpectedly (${detail})`);
    this.name = 'SharpChildExited';
  }
}

/** What the child is sent: raw pixels go through files in the scratch directory. */
interface WireTask {
  input: Exclude<SharpTaskInput, { kind: 'raw' }> | { kind: 'rawFile'; path: string; width: number; height: number; channels: number };
  inputOptions?: SharpInputOptions;
  ops: SharpOp[];
  output: { path: string } | { rawPath: string };
}

interface Reply {
  id?: number;
  type?: string;
  loadMs?: number;
  ok?: boolean;
  info?: SharpTaskResult;
  error?: string;
  rss?: number;
}

class SharpChild {
  readonly proc: ChildProcess;
  readonly ready: Promise<void>;
  /** Resolves once the process has exited (and been reaped). */
  readonly exited: Promise<void>;
  dead = false;
  loadMs: number | null = null;
  private pending: { id: number; resolve(r: Reply): void; reject(e: Error): void } | null = null;
  private nextId = 1;

  constructor() {
    // Plain .mjs: none of the parent's loaders (tsx) are needed.
    this.proc = fork(SCRIPT, [], { execArgv: [], stdio: ['ignore', 'ignore', 'inherit', 'ipc'], serialization: 'json' });
    let onExit!: () => void;
    this.exited = new Promise<void>((resolve) => {
      onExit = resolve;
    });
    this.ready = new Promise<void>((resolve, reject) => {
      this.proc.on('message', (msg: Reply) => {
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
      });
      const fail = (err: Error): void => {
        this.dead = true;
        reject(err);
        const p = this.pending;
        this.pending = null;
        p?.reject(err);
      };
      this.proc.on('error', (err) => {
        fail(err);
        // Never started: there will be no exit event.
        if (this.proc.pid === undefined) onExit();
      });
      this.proc.on('exit', (code, signal) => {
        fail(new SharpChildExited(signal ? `signal ${signal}` : `code ${code}`));
        onExit();
      });
    });
    // An unobserved failure while warming must not become an unhandled rejection.
    this.ready.catch(() => undefined);
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  run(task: WireTask): Promise<Reply> {
    if (this.dead) return Promise.reject(new SharpChildExited('not running'));
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.pending = { id, resolve, reject };
      this.proc.send({ id, task }, (err) => {
        if (err && this.pending?.id === id) {
          this.pending = null;
          reject(err);
        }
      });
    });
  }

  /** Holds the parent's event loop open while a task runs; lets it exit while idle. */
  hold(on: boolean): void {
    if (this.dead) return;
    if (on) {
      this.proc.ref();
      this.proc.channel?.ref();
    } else {
      this.proc.unref();
      this.proc.channel?.unref();
    }
  }

  /** SIGKILL; resolves once the process is gone. */
  kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      // Ref'd until the exit is seen, so that whoever awaits it keeps the process up.
      this.hold(true);
      this.proc.kill('SIGKILL');
    }
    this.dead = true;
    return this.exited;
  }
}

const idle: SharpChild[] = [];
const busy = new Set<SharpChild>();

function spawnIdle(): SharpChild {
  const child = new SharpChild();
  child.hold(false);
  idle.push(child);
  // A warm child that dies while idle is simply dropped.
  void child.exited.then(() => {
    const i = idle.indexOf(child);
    if (i >= 0) idle.splice(i, 1);
  });
  return child;
}

function acquire(): SharpChild {
  // The most recently used child first.
  let child: SharpChild | undefined;
  while ((child = idle.pop())) if (!child.dead) break;
  child ??= new SharpChild();
  child.hold(true);
  busy.add(child);
  return child;
}

function release(child: SharpChild, rss = 0): void {
  busy.delete(child);
  if (child.dead) return;
  for (let i = idle.length - 1; i >= 0; i--) if (idle[i].dead) idle.splice(i, 1);
  if (idle.length >= MAX_IDLE || rss > MAX_WARM_RSS_BYTES) {
    void child.kill();
    if (idle.length === 0) spawnIdle();
    return;
  }
  child.hold(false);
  idle.push(child);
}

/** Keeps one warm child after one was lost (killed on cancel). */
function replenish(): void {
  if (!idle.some((c) => !c.dead)) spawnIdle();
}

/** Starts a warm child now (node + sharp load) so the first task does not pay for it. */
export function prewarmSharp(): Promise<{ loadMs: number | null }> {
  let child = idle.find((c) => !c.dead);
  if (!child) {
    // Ref'd while loading (whoever awaits this keeps the process up); unref'd once ready and idle.
    const fresh = spawnIdle();
    fresh.hold(true);
    void fresh.ready.then(
      () => {
        if (idle.includes(fresh)) fresh.hold(false);
      },
      () => undefined,
    );
    child = fresh;
  }
  const warm = child;
  return warm.ready.then(() => ({ loadMs: warm.loadMs }));
}

/** Kills every child, idle or busy (tests, shutdown). */
export async function shutdownSharp(): Promise<void> {
  const all = [...idle, ...busy];
  idle.length = 0;
  await Promise.all(all.map((c) => c.kill()));
}

/** Pids of the children running a task now (tests, diagnostics). */
export function busySharpPids(): number[] {
  return [...busy].flatMap((c) => (c.pid === undefined ? [] : [c.pid]));
}

/** Runs a task here, with the same pipeline the child would build. */
async function runInProcess(task: SharpTask, signal: AbortSignal): Promise<SharpTaskResult> {
  const { input } = task;
  const source: PipelineSource =
    input.kind === 'file' ? input.path : input.kind === 'svg' ? { svg: input.svg } : { raw: input.data, width: input.width, height: input.height, channels: input.channels };
  const pipeline = buildPipeline(source, task.inputOptions, task.ops);
  let result: SharpTaskResult;
  if ('raw' in task.output) {
    const { data, info } = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    result = { width: info.width, height: info.height, channels: info.channels, size: data.length, data };
  } else {
    const info = await pipeline.toFile(task.output.path);
    result = { width: info.width, height: info.height, channels: info.channels, size: info.size };
  }
  if (signal.aborted) throw new Aborted();
  return result;
}

let scratchCounter = 0;

/**
 * Runs one sharp task — in a child process unless `options.inProcess`. Rejects with `Aborted` as
 * soon as `signal` aborts (after the child was SIGKILLed and has exited, so nothing writes to the
 * output any more), and with an Error carrying sharp's message when the pipeline fails. Raw
 * pixels in or out need `options.scratchDir` for the trip between the processes.
 */
export async function runSharpTask(task: SharpTask, signal: AbortSignal, options: SharpRunOptions = {}): Promise<SharpTaskResult> {
  if (signal.aborted) throw new Aborted();
  if (options.inProcess) return runInProcess(task, signal);
  const rawIn = task.input.kind === 'raw';
  const rawOut = 'raw' in task.output;
  if ((rawIn || rawOut) && !options.scratchDir) throw new Error('runSharpTask: raw pixels need a scratchDir');
  const stem = join(options.scratchDir ?? '', `sharp-${process.pid}-${++scratchCounter}`);
  const wire: WireTask = {
    input: task.input.kind === 'raw' ? { kind: 'rawFile', path: `${stem}-in.raw`, width: task.input.width, height: task.input.height, channels: task.input.channels } : task.input,
    inputOptions: task.inputOptions,
    ops: task.ops,
    output: 'raw' in task.output ? { rawPath: `${stem}-out.raw` } : task.output,
  };
  try {
    if (task.input.kind === 'raw') {
      await writeFile(`${stem}-in.raw`, task.input.data);
      if (signal.aborted) throw new Aborted();
    }
    const info = await runInChild(wire, signal);
    if (!rawOut) return info;
    const data = await readFile(`${stem}-out.raw`);
    if (signal.aborted) throw new Aborted();
    return { ...info, data };
  } finally {
    if (rawIn) await rm(`${stem}-in.raw`, { force: true });
    if (rawOut) await rm(`${stem}-out.raw`, { force: true });
  }
}

function runInChild(task: WireTask, signal: AbortSignal): Promise<SharpTaskResult> {
  if (signal.aborted) return Promise.reject(new Aborted());
  const child = acquire();
  return new Promise<SharpTaskResult>((resolve, reject) => {
    let settled = false;
    const onAbort = (): void => {
      if (settled) return;
      settled = true;
      busy.delete(child);
      void child.kill().then(() => reject(new Aborted()));
      replenish();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    child.run(task).then(
      (reply) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        release(child, reply.rss);
        if (reply.ok && reply.info) resolve(reply.info);
        else reject(new Error(reply.error ?? 'sharp task failed'));
      },
      (err: Error) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        busy.delete(child);
        void child.kill(); // gone already, or its channel broke
        reject(err);
      },
    );
  });
}
