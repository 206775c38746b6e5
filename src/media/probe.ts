/**
 * What a file is, from its headers only: magic bytes (file-type), image size (sharp metadata, which
 * reads the header without decoding pixels) and video/audio duration and size (`ffmpeg -i`, whose
 * stderr describes the container; there is no ffprobe).
 *
 * Given `maxInputPixels`, the probe is also the pixel-bomb check: an image whose header declares
 * more than that many pixels is refused (PixelLimitExceeded) before anything decodes it.
 */
import { spawn } from 'node:child_process';
import { fileTypeFromFile } from 'file-type';
import sharp from 'sharp';
import { TooLarge } from '../lib/errors.ts';
import { ffmpegPath } from './ffmpeg.ts';

type MediaKind = 'image' | 'video' | 'audio' | 'file';

export interface ProbeResult {
  mimeType: string;
  kind: MediaKind;
  width: number | null;
  height: number | null;
  durationSeconds: number | null;
}

interface FfmpegVideoStream {
  codec: string;
  pixFmt: string | null;
  /** As stored; `displayWidth/Height` honour a ±90° rotation. */
  width: number;
  height: number;
  rotation: number;
  displayWidth: number;
  displayHeight: number;
  attachedPic: boolean;
}

export interface FfmpegInfo {
  durationSeconds: number | null;
  /** The first video stream that is not an attached picture (cover art), else the first one. */
  video: FfmpegVideoStream | null;
  audioCodec: string | null;
  /**
   * A picture size the decoder refused to allocate (over `-max_pixels`, or over ffmpeg's own
   * bound), as its header declared it. The stream then has no size in `video`.
   */
  refusedSize?: { width: number; height: number };
}

const PROBE_TIMEOUT_MS = 30_000;

/** sharp's own `limitInputPixels` default (0x3FFF²), and the default of ZHINIAN_MAX_INPUT_PIXELS. */
export const DEFAULT_MAX_INPUT_PIXELS = 268_402_689;

/**
 * An image whose header declares more pixels than the configured limit. A TooLarge (413 at the
 * API); the worker turns it into a job error. `detail` is the message without a field prefix.
 */
export class PixelLimitExceeded extends TooLarge {
  readonly detail: string;
  constructor(
    readonly width: number,
    readonly height: number,
    readonly limit: number,
    prefix?: string,
  ) {
    const detail = `the image is ${width}×${height} = ${width * height} pixels, over the ${limit}-pixel limit (ZHINIAN_MAX_INPUT_PIXELS).`;
    super(prefix ? `${prefix}: ${detail}` : detail.charAt(0).toUpperCase() + detail.slice(1));
    this.detail = detail;
  }

  /** The same refusal, its message naming the field or file it is about. */
  about(prefix: string): PixelLimitExceeded {
    return new PixelLimitExceeded(this.width, this.height, this.limit, prefix);
  }
}

/** Throws PixelLimitExceeded when width × height is over `limit`; unknown sizes pass. */
export function checkPixelLimit(width: number | null | undefined, height: number | null | undefined, limit: number | undefined): void {
  if (!limit || !width || !height) return;
  if (width * height > limit) throw new PixelLimitExceeded(width, height, limit);
}

export interface ProbeOptions {
  /**
   * Refuse, with PixelLimitExceeded, an image whose header declares more than this many pixels:
   * any image sharp or ffmpeg would decode, including ones file-type does not name (SVG).
   */
  maxInputPixels?: number;
  signal?: AbortSignal;
}

export async function probeFile(path: string, opts: ProbeOptions = {}): Promise<ProbeResult> {
  const limit = opts.maxInputPixels;
  const type = await fileTypeFromFile(path).catch(() => undefined);
  if (!type) {
    // No magic bytes, yet sharp may still decode it (SVG is text): its header counts too.
    if (limit) {
      const size = await imageSize(path);
      checkPixelLimit(size?.width, size?.height, limit);
    }
    return { mimeType: 'application/octet-stream', kind: 'file', width: null, height: null, durationSeconds: null };
  }
  let mimeType = type.mime as string;
  const kind = kindOf(mimeType);

  if (kind === 'image') {
    const size = await imageSize(path);
    if (size) {
      checkPixelLimit(size.width, size.height, limit);
      return { mimeType, kind, ...size, durationSeconds: null };
    }
    // Formats sharp does not read (bmp, ico, …): ffmpeg often describes them. It decodes a frame
    // to do so, so the limit goes in as -max_pixels: a bomb is refused before it is allocated,
    // and ffmpeg's message still tells its declared size.
    const info = await ffmpegInfo(path, opts.signal, { maxPixels: limit }).catch(() => null);
    checkPixelLimit(info?.refusedSize?.width, info?.refusedSize?.height, limit);
    const v = info?.video;
    checkPixelLimit(v?.width, v?.height, limit);
    return { mimeType, kind, width: v?.displayWidth ?? null, height: v?.displayHeight ?? null, durationSeconds: null };
  }

  if (kind === 'video' || kind === 'audio') {
    const info = await ffmpegInfo(path, opts.signal).catch(() => null);
    const durationSeconds = info?.durationSeconds ?? null;
    const video = info?.video && !info.video.attachedPic ? info.video : null;
    if (kind === 'video' && info && !video && info.audioCodec) {
      // An audio-only file in a video container (e.g. mp4 with only AAC).
      if (mimeType === 'video/mp4') mimeType = 'audio/mp4';
      return { mimeType, kind: 'audio', width: null, height: null, durationSeconds };
    }
    if (kind === 'audio') return { mimeType, kind, width: null, height: null, durationSeconds };
    return {
      mimeType,
      kind,
      width: video?.displayWidth ?? null,
      height: video?.displayHeight ?? null,
      durationSeconds,
    };
  }

  return { mimeType, kind: 'file', width: null, height: null, durationSeconds: null };
}

function kindOf(mime: string): MediaKind {
  if (mime.startsWith('image/')) return 'image';
  if (mime.startsWith('video/')) return 'video';
  if (mime.startsWith('audio/')) return 'audio';
  if (mime === 'application/ogg') return 'video';
  return 'file';
}

/** Size as displayed (EXIF orientation applied), from the header only. */
async function imageSize(path: string): Promise<{ width: number; height: number } | null> {
  try {
    const meta = await sharp(path, { limitInputPixels: false }).metadata();
    const width = meta.autoOrient?.width ?? meta.width;
    const height = meta.autoOrient?.height ?? meta.height;
    if (!width || !height) return null;
    return { width, height };
  } catch {
    return null;
  }
}

/**
 * Runs `ffmpeg -i path` (which exits non-zero: no output given) and parses what it prints.
 * `maxPixels`: the decoders' `-max_pixels`, for the frame ffmpeg may decode to learn a size.
 */
export async function ffmpegInfo(path: string, signal?: AbortSignal, opts: { maxPixels?: number } = {}): Promise<FfmpegInfo> {
  const bin = await ffmpegPath();
  const limit = opts.maxPixels ? ['-max_pixels', String(opts.maxPixels)] : [];
  const stderr = await new Promise<string>((resolve, reject) => {
    const child = spawn(bin, ['-nostdin', '-hide_banner', ...limit, '-i', path], { stdio: ['ignore', 'ignore', 'pipe'] });
    let text = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      // The header description comes first; a pathological file cannot make us buffer forever.
      if (text.length < 256 * 1024) text += chunk;
    });
    const kill = (): void => {
      child.kill('SIGKILL');
    };
    const timer = setTimeout(kill, PROBE_TIMEOUT_MS);
    signal?.addEventListener('abort', kill, { once: true });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', kill);
      if (signal?.aborted) reject(new Error('aborted'));
      else resolve(text);
    });
  });
  return parseFfmpegInfo(stderr);
}

/** Parses the input description `ffmpeg -i` writes to stderr. Exported for tests. */
export function parseFfmpegInfo(text: string): FfmpegInfo {
  const lines = text.split(/\r?\n/);
  let durationSeconds: number | null = null;
  const videos: FfmpegVideoStream[] = [];
  let audioCodec: string | null = null;
  let current: FfmpegVideoStream | null = null;
  let refusedSize: FfmpegInfo['refusedSize'];

  for (const line of lines) {
    // libavutil's av_image_check_size2: "Picture size WxH is invalid" / "… exceeds specified max pixel count N".
    const refused = /Picture size (\d{1,10})x(\d{1,10}) (?:is invalid|exceeds)/.exec(line);
    if (refused) {
      const width = Number(refused[1]);
      const height = Number(refused[2]);
      if (!refusedSize || width * height > refusedSize.width * refusedSize.height) refusedSize = { width, height };
      continue;
    }
    const d = /Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)/.exec(line);
    if (d && durationSeconds === null) {
      durationSeconds = Number(d[1]) * 3600 + Number(d[2]) * 60 + Number(d[3]);
      continue;
    }
    const stream = /^\s*Stream #\d+:\d+.*?: (Video|Audio|Subtitle|Data|Attachment): (.*)$/.exec(line);
    if (stream) {
      current = null;
      if (stream[1] === 'Video') {
        const parts = splitTopLevel(stream[2]);
        const codec = (/^([A-Za-z0-9_-]+)/.exec(parts[0] ?? '') ?? [])[1] ?? 'unknown';
        const pixFmt = (/^([a-z0-9_]+)/.exec(parts[1] ?? '') ?? [])[1] ?? null;
        let width = 0;
        let height = 0;
        for (const part of parts.slice(1)) {
          const m = /^(\d{1,6})x(\d{1,6})\b/.exec(part);
          if (m) {
            width = Number(m[1]);
            height = Number(m[2]);
            break;
          }
        }
        if (width > 0 && height > 0) {
          current = {
            codec,
            pixFmt: pixFmt && !/^\d/.test(pixFmt) ? pixFmt : null,
            width,
            height,
            rotation: 0,
            displayWidth: width,
            displayHeight: height,
            attachedPic: /\(attached pic\)/.test(stream[2]),
          };
          videos.push(current);
        }
      } else if (stream[1] === 'Audio' && audioCodec === null) {
        audioCodec = (/^([A-Za-z0-9_-]+)/.exec(stream[2]) ?? [])[1] ?? 'unknown';
      }
      continue;
    }
    if (current) {
      const rotate = /^\s*rotate\s*:\s*(-?\d+(?:\.\d+)?)/.exec(line) ?? /displaymatrix: rotation of (-?\d+(?:\.\d+)?) degrees/.exec(line);
      if (rotate) {
        const deg = ((Math.round(Number(rotate[1])) % 360) + 360) % 360;
        current.rotation = deg;
        if (deg === 90 || deg === 270) {
          current.displayWidth = current.height;
          current.displayHeight = current.width;
        }
      }
    }
  }

  const video = videos.find((v) => !v.attachedPic) ?? videos[0] ?? null;
  return refusedSize ? { durationSeconds, video, audioCodec, refusedSize } : { durationSeconds, video, audioCodec };
}

/** Splits on commas that are not inside parentheses or brackets. */
function splitTopLevel(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '(' || c === '[') depth++;
    else if ((c === ')' || c === ']') && depth > 0) depth--;
    else if (c === ',' && depth === 0) {
      out.push(s.slice(start, i).trim());
      start = i + 1;
    }
  }
  out.push(s.slice(start).trim());
  return out;
}
