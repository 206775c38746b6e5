/**
 * The local engine's long sharp (libvips) pipelines run in a child process, because a running
 * libvips pipeline cannot be interrupted — not even by terminating a worker thread, whose native
 * threads keep going. Cancelling a task SIGKILLs its child, which stops the work at once.
 *
 * Starting node and loading sharp takes a few hundred ms, so idle children are kept warm (unref'd,
 * so they never hold the process open); a task takes an idle one or starts a new one. A killed
 * child is replaced by a fresh warm one in the background (the pool is warm-pool.ts's, shared with
 * the inpaint worker). A child dies with its parent: it SIGKILLs itself when its IPC channel closes.
 *
 * Tasks are plain data (see sharp-task.mjs): input → operations → output file or raw pixels.
 * Small decodes and encodes may run in this process instead (`inProcess`), where they are short
 * and the trip of raw pixels through files would cost more than the work.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Aborted } from '../../lib/abort.ts';
import { buildPipeline, type PipelineSource } from './sharp-task.mjs';
import { childProcessHelper, WarmPool, type HelperReply } from './warm-pool.ts';

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

interface Reply extends HelperReply {
  ok?: boolean;
  info?: SharpTaskResult;
  error?: string;
  rss?: number;
}

const pool = new WarmPool<Reply>({
  // Plain .mjs: none of the parent's loaders (tsx) are needed.
  start: childProcessHelper(
    SCRIPT,
    { execArgv: [], stdio: ['ignore', 'ignore', 'inherit', 'ipc'], serialization: 'json' },
    (code, signal) => new SharpChildExited(signal ? `signal ${signal}` : `code ${code}`),
  ),
  notRunning: () => new SharpChildExited('not running'),
  maxIdle: MAX_IDLE,
  maxWarmBytes: MAX_WARM_RSS_BYTES,
  memoryOf: (reply) => reply.rss,
  // Keeps one warm child after one was lost (killed on cancel, dropped for memory).
  replenish: true,
  // A killed child may have been writing the output: the cancel lands once it has exited.
  abortAwaitsExit: true,
});

/** Starts a warm child now (node + sharp load) so the first task does not pay for it. */
export function prewarmSharp(): Promise<{ loadMs: number | null }> {
  return pool.prewarm();
}

/** Kills every child, idle or busy (tests, shutdown). */
export function shutdownSharp(): Promise<void> {
  return pool.shutdown();
}

/** Pids of the children running a task now (tests, diagnostics). */
export function busySharpPids(): number[] {
  return pool.busyPids();
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

async function runInChild(task: WireTask, signal: AbortSignal): Promise<SharpTaskResult> {
  const reply = await pool.run({ task }, signal);
  if (reply.ok && reply.info) return reply.info;
  throw new Error(reply.error ?? 'sharp task failed');
}
