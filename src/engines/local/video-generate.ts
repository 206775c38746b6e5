/**
 * video.generate: H.264/yuv420p MP4 (faststart) of exactly `settings.duration` seconds at 24 fps.
 * Input images (or, without any, pictures rendered from the prompt) are the scenes, each given an
 * even share of the frames and a slow zoom or pan (ffmpeg `zoompan`), joined with short fades.
 * Scene stills are made in the sharp child process and the encode by ffmpeg; a cancel kills either.
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { runFfmpeg } from '../../media/ffmpeg.ts';
import type { EngineOutput, EngineRequest, RunContext } from '../engine.ts';
import { VIDEO_RATIOS, VIDEO_RESOLUTIONS, type VideoRatio, type VideoResolution } from '../../contract/index.ts';
import { throwIfAborted } from '../../lib/abort.ts';
import { decodeError, imageInputs, inputPixelLimit, invalidInput, readImageInfo, type ImageInfo } from './inputs.ts';
import { Prng, promptSeed, renderPromptImage } from './render.ts';
import { runSharpTask } from './sharp-child.ts';
import { videoSize } from './video-size.ts';

const VIDEO_FPS = 24;
const MAX_DURATION_SECONDS = 120;
/** Scenes are rendered this much larger than the frame so zooms and pans stay sharp and smooth. */
const OVERSCAN = 1.5;
/** How far a scene zooms (1 → 1 + ZOOM). */
const ZOOM = 0.15;
/** At most this many scenes; each lasts at least half a second. */
const MAX_SCENES = 24;

const even = (n: number): number => Math.max(2, 2 * Math.round(n / 2));

type Motion = 'zoom-in' | 'zoom-out' | 'pan-right' | 'pan-left' | 'pan-down' | 'pan-up';

/** The zoompan expressions for one scene of `frames` frames (`on` counts 0…frames-1). */
function zoompanFilter(motion: Motion, frames: number, width: number, height: number): string {
  const p = frames > 1 ? `(on/${frames - 1})` : '0';
  const centreX = '(iw-iw/zoom)/2';
  const centreY = '(ih-ih/zoom)/2';
  let z: string;
  let x = centreX;
  let y = centreY;
  switch (motion) {
    case 'zoom-in':
      z = `1+${ZOOM}*${p}`;
      break;
    case 'zoom-out':
      z = `1+${ZOOM}*(1-${p})`;
      break;
    case 'pan-right':
      z = `${1 + ZOOM}`;
      x = `(iw-iw/zoom)*${p}`;
      break;
    case 'pan-left':
      z = `${1 + ZOOM}`;
      x = `(iw-iw/zoom)*(1-${p})`;
      break;
    case 'pan-down':
      z = `${1 + ZOOM}`;
      y = `(ih-ih/zoom)*${p}`;
      break;
    case 'pan-up':
      z = `${1 + ZOOM}`;
      y = `(ih-ih/zoom)*(1-${p})`;
      break;
  }
  return `zoompan=z='${z}':x='${x}':y='${y}':d=${frames}:s=${width}x${height}:fps=${VIDEO_FPS}`;
}

/** Splits `total` frames into `n` near-equal parts (earlier parts take the remainder). */
export function splitFrames(total: number, n: number): number[] {
  const base = Math.floor(total / n);
  return Array.from({ length: n }, (_, i) => base + (i < total % n ? 1 : 0));
}

export async function generateVideo(request: EngineRequest, ctx: RunContext): Promise<EngineOutput[]> {
  throwIfAborted(ctx.signal);
  const settings = request.params.settings;
  const ratio: VideoRatio = settings?.ratio ?? '16:9';
  const resolution: VideoResolution = settings?.resolution ?? '720p';
  const duration = settings?.duration ?? 5;
  if (!VIDEO_RATIOS.includes(ratio)) throw invalidInput(`settings.ratio must be one of ${VIDEO_RATIOS.join(', ')}.`);
  if (!VIDEO_RESOLUTIONS.includes(resolution)) throw invalidInput(`settings.resolution must be one of ${VIDEO_RESOLUTIONS.join(', ')}.`);
  if (!Number.isFinite(duration) || duration <= 0 || duration > MAX_DURATION_SECONDS) {
    throw invalidInput(`settings.duration must be more than 0 and at most ${MAX_DURATION_SECONDS} seconds.`);
  }

  const totalFrames = Math.max(1, Math.round(duration * VIDEO_FPS));
  const maxScenes = Math.max(1, Math.min(MAX_SCENES, Math.floor(totalFrames / (VIDEO_FPS / 2))));
  const images: ImageInfo[] = [];
  for (const input of imageInputs(request).slice(0, maxScenes)) {
    images.push(await readImageInfo(input, `input image ${images.length + 1}`, inputPixelLimit(ctx)));
  }
  throwIfAborted(ctx.signal);

  const { width, height } = videoSize(ratio, resolution, images[0] ?? null);
  const sceneW = even(width * OVERSCAN);
  const sceneH = even(height * OVERSCAN);
  const prompt = request.prompt ?? '';

  // Scene stills, each covering the (overscanned) frame exactly.
  const scenes: string[] = [];
  const sceneCount = images.length || Math.min(maxScenes, Math.max(1, Math.ceil(duration / 4)), 3);
  for (let i = 0; i < sceneCount; i++) {
    throwIfAborted(ctx.signal);
    const path = join(ctx.workDir, `scene-${i}.png`);
    const image = images[i];
    if (image) {
      try {
        await runSharpTask(
          {
            input: { kind: 'file', path: image.path },
            inputOptions: { limitInputPixels: inputPixelLimit(ctx) },
            ops: [
              ['rotate'],
              ['flatten', { background: '#000000' }],
              ['resize', sceneW, sceneH, { fit: 'cover', position: 'centre' }],
              ['removeAlpha'],
              ['png', { compressionLevel: 1, adaptiveFiltering: false }],
            ],
            output: { path },
          },
          ctx.signal,
        );
      } catch (err) {
        throw decodeError(err, `input image ${i + 1}`);
      }
    } else {
      await renderPromptImage({ prompt, width: sceneW, height: sceneH, variant: i, compressionLevel: 1 }, path, ctx.signal);
    }
    scenes.push(path);
    ctx.onProgress(2 + Math.round((8 * (i + 1)) / sceneCount));
  }
  throwIfAborted(ctx.signal);

  // Motions: deterministic per prompt, never the same twice in a row.
  const rng = new Prng(promptSeed(`${prompt}\u0000motion`));
  const motions: Motion[] = ['zoom-in', 'zoom-out', width >= height ? 'pan-right' : 'pan-down', width >= height ? 'pan-left' : 'pan-up'];
  let m = rng.int(0, motions.length - 1);
  const frames = splitFrames(totalFrames, scenes.length);
  const fade = (k: number): number => Math.max(1, Math.min(8, Math.floor(k / 4)));
  const chains: string[] = [];
  scenes.forEach((_, i) => {
    const k = frames[i];
    const filters = [zoompanFilter(motions[m], k, width, height), 'setsar=1'];
    if (scenes.length > 1 && i > 0) filters.push(`fade=t=in:s=0:n=${fade(k)}`);
    if (scenes.length > 1 && i < scenes.length - 1) filters.push(`fade=t=out:s=${k - fade(k)}:n=${fade(k)}`);
    chains.push(`[${i}:v]${filters.join(',')}[v${i}]`);
    m = (m + 1 + rng.int(0, motions.length - 2)) % motions.length;
  });
  const inputsLabel = scenes.map((_, i) => `[v${i}]`).join('');
  const graph = `${chains.join(';')};${inputsLabel}concat=n=${scenes.length}:v=1:a=0,format=yuv420p[out]`;

  const outSeconds = totalFrames / VIDEO_FPS;
  const path = join(ctx.workDir, 'video.mp4');
  const threads = Math.max(1, Math.min(8, availableParallelism()));
  const args = [
    ...scenes.flatMap((s) => ['-i', s]),
    '-filter_complex',
    graph,
    '-map',
    '[out]',
    '-an',
    '-c:v',
    'libx264',
    '-preset',
    'veryfast',
    '-crf',
    '21',
    '-pix_fmt',
    'yuv420p',
    '-r',
    String(VIDEO_FPS),
    '-frames:v',
    String(totalFrames),
    '-t',
    outSeconds.toFixed(3),
    '-threads',
    String(threads),
    '-movflags',
    '+faststart',
    '-f',
    'mp4',
    path,
  ];
  ctx.onProgress(10);
  await runFfmpeg(args, {
    signal: ctx.signal,
    totalSeconds: outSeconds,
    onProgress: (s) => ctx.onProgress(10 + Math.round((88 * s) / outSeconds)),
  });
  throwIfAborted(ctx.signal);
  ctx.onProgress(100);
  return [{ path, kind: 'video', mimeType: 'video/mp4' }];
}
