/**
 * Running the ffmpeg binary: the system one when `ffmpeg` is on PATH, else the static build from
 * `@ffmpeg-installer/ffmpeg`. Runs are cancellable (SIGKILL on abort) and report progress from
 * `-progress pipe:1`.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { Aborted } from '../lib/abort.ts';

let resolved: Promise<string> | null = null;

/** The ffmpeg executable to run; resolved once per process. */
export function ffmpegPath(): Promise<string> {
  resolved ??= resolveFfmpeg().catch((err: unknown) => {
    resolved = null;
    throw err;
  });
  return resolved;
}

async function resolveFfmpeg(): Promise<string> {
  const onPath = findOnPath('ffmpeg');
  if (onPath) return onPath;
  const mod = (await import('@ffmpeg-installer/ffmpeg')) as { path?: string; default?: { path?: string } };
  const path = mod.path ?? mod.default?.path;
  if (!path) throw new Error('ffmpeg not found: not on PATH and @ffmpeg-installer/ffmpeg has no binary');
  return path;
}

function findOnPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

export interface RunFfmpegOptions {
  signal: AbortSignal;
  /** Called with the output position in seconds as ffmpeg reports it (clamped to totalSeconds). */
  onProgress?(outSeconds: number): void;
  totalSeconds?: number;
}

export interface RunFfmpegResult {
  /** The last lines ffmpeg wrote to stderr (warnings). */
  stderrTail: string;
}

/** Keeps only the last `limit` characters written to it. */
class Tail {
  private text = '';
  constructor(private readonly limit: number) {}
  push(chunk: string): void {
    this.text += chunk;
    if (this.text.length > this.limit * 2) this.text = this.text.slice(-this.limit);
  }
  lines(count: number, maxLineLength = 300): string {
    return this.text
      .slice(-this.limit)
      .split(/\r?\n|\r/)
      .map((l) => l.trim())
      .filter(Boolean)
      .slice(-count)
      .map((l) => (l.length > maxLineLength ? `${l.slice(0, maxLineLength)}…` : l))
      .join('\n');
  }
}

/**
 * Runs ffmpeg with `-nostdin -hide_banner -y -progress pipe:1` prepended to `args`. Rejects with
 * `Aborted` (after the child has exited) when the signal aborts, and with a short error made of the
 * last stderr lines on a non-zero exit.
 */
export async function runFfmpeg(args: readonly string[], options: RunFfmpegOptions): Promise<RunFfmpegResult> {
  const { signal, onProgress, totalSeconds } = options;
  if (signal.aborted) throw new Aborted();
  const bin = await ffmpegPath();
  if (signal.aborted) throw new Aborted();

  const fullArgs = ['-nostdin', '-hide_banner', '-y', '-nostats', '-loglevel', 'warning', '-progress', 'pipe:1', ...args];
  return new Promise<RunFfmpegResult>((resolve, reject) => {
    const child = spawn(bin, fullArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
    const stderr = new Tail(8192);
    let aborted = false;
    let spawnError: Error | null = null;
    let lastReported = -1;
    let pending = '';

    const onAbort = (): void => {
      aborted = true;
      child.kill('SIGKILL');
    };
    signal.addEventListener('abort', onAbort, { once: true });

    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => stderr.push(chunk));

    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      if (!onProgress) return;
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        const seconds = parseProgressLine(line);
        if (seconds === null) continue;
        const clamped = totalSeconds !== undefined ? Math.min(seconds, totalSeconds) : seconds;
        if (clamped > lastReported) {
          lastReported = clamped;
          try {
            onProgress(clamped);
          } catch {
            // a progress callback never fails the run
          }
        }
      }
    });

    child.on('error', (err) => {
      spawnError = err;
      if (child.pid === undefined) {
        // Never started (ENOENT, EACCES): there will be no exit to wait for.
        signal.removeEventListener('abort', onAbort);
        reject(new Error(`ffmpeg could not start: ${err.message}`));
      }
    });
    child.on('close', (code, sig) => {
      signal.removeEventListener('abort', onAbort);
      if (aborted) return reject(new Aborted());
      if (spawnError) return reject(new Error(`ffmpeg could not start: ${spawnError.message}`));
      if (code === 0) return resolve({ stderrTail: stderr.lines(10) });
      const tail = stderr.lines(6);
      const how = code !== null ? `exit code ${code}` : `signal ${sig}`;
      reject(new Error(`ffmpeg failed (${how})${tail ? `: ${tail}` : ''}`));
    });
  });
}

/** Parses `out_time_us=`, `out_time_ms=` (also microseconds) or `out_time=` into seconds. */
function parseProgressLine(line: string): number | null {
  const eq = line.indexOf('=');
  if (eq < 0) return null;
  const key = line.slice(0, eq).trim();
  const value = line.slice(eq + 1).trim();
  if (key === 'out_time_us' || key === 'out_time_ms') {
    const us = Number(value);
    return Number.isFinite(us) && us >= 0 ? us / 1e6 : null;
  }
  if (key === 'out_time') {
    const m = /^(-?\d+):(\d+):(\d+(?:\.\d+)?)$/.exec(value);
    if (!m) return null;
    const s = Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]);
    return s >= 0 ? s : null;
  }
  return null;
}
