/** Shared helpers for the local engine's tests (not a test file itself). */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import type { EngineInput, RunContext } from '../src/engines/engine.ts';
import { busySharpPids } from '../src/engines/local/sharp-child.ts';

export interface TestContext extends RunContext {
  controller: AbortController;
  progress: number[];
  cleanup(): void;
}

export function makeContext(prefix = 'local-engine-'): TestContext {
  const workDir = mkdtempSync(join(tmpdir(), prefix));
  const controller = new AbortController();
  const progress: number[] = [];
  return {
    workDir,
    controller,
    signal: controller.signal,
    progress,
    onProgress(p: number) {
      progress.push(p);
    },
    cleanup() {
      rmSync(workDir, { recursive: true, force: true });
    },
  };
}

export function imageInput(path: string, role: EngineInput['role'] = 'image'): EngineInput {
  return { role, path, mimeType: 'image/png' };
}

/** A PNG of a horizontal+vertical RGB gradient. */
export async function gradientPng(path: string, width: number, height: number): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      raw[i] = Math.floor((x * 255) / width);
      raw[i + 1] = Math.floor((y * 255) / height);
      raw[i + 2] = 128;
    }
  }
  await sharp(raw, { raw: { width, height, channels: 3 } })
    .png()
    .toFile(path);
  return raw;
}

export async function solidPng(path: string, width: number, height: number, color = '#3366cc'): Promise<void> {
  await sharp({ create: { width, height, channels: 3, background: color } })
    .png()
    .toFile(path);
}

/** Top-level MP4 box types in file order (`ftyp`, `moov`, `mdat`, …). */
export async function topLevelBoxes(path: string): Promise<string[]> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const types: string[] = [];
    const header = Buffer.alloc(16);
    let offset = 0;
    while (offset + 8 <= size && types.length < 64) {
      await fh.read(header, 0, 16, offset);
      let boxSize = header.readUInt32BE(0);
      const type = header.toString('latin1', 4, 8);
      if (boxSize === 1) boxSize = Number(header.readBigUInt64BE(8));
      else if (boxSize === 0) boxSize = size - offset;
      if (boxSize < 8) break;
      types.push(type);
      offset += boxSize;
    }
    return types;
  } finally {
    await fh.close();
  }
}

/** Pids of live processes whose command line contains `needle` (Linux /proc). */
export function processesMentioning(needle: string): number[] {
  if (!existsSync('/proc')) return [];
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmd.includes(needle)) pids.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A process is gone when it no longer exists, or is a zombie left for a reaper that is not us. */
export function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return true;
    throw err;
  }
  if (!existsSync('/proc')) return false;
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z') ?? false;
  } catch {
    return true; // exited meanwhile
  }
}

/** The pids of the sharp children running a task, once there is one (waits at most `ms`). */
export async function waitForBusySharpChild(ms = 3000): Promise<number[]> {
  const until = performance.now() + ms;
  let pids = busySharpPids();
  while (pids.length === 0 && performance.now() < until) {
    await sleep(10);
    pids = busySharpPids();
  }
  return pids;
}
