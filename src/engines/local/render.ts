/**
 * The offline "model": a deterministic picture derived from a prompt. A PRNG seeded from the
 * prompt's sha256 picks a palette, a background gradient and shapes (circles, rounded rectangles,
 * blobs); the prompt itself is written on the picture. Everything is one SVG composited by sharp
 * (in the sharp child process), optionally over a reference image (resized to cover the frame).
 */
import { createHash } from 'node:crypto';
import { runSharpTask, type SharpOp, type SharpTask } from './sharp-child.ts';

/** xoshiro128** — small, fast, and fully determined by its 128-bit seed. */
export class Prng {
  private s: Uint32Array;
  constructor(seed: Uint8Array) {
    const digest = seed.length >= 16 ? seed : createHash('sha256').update(seed).digest();
    const view = new DataView(digest.buffer, digest.byteOffset, 16);
    this.s = new Uint32Array([view.getUint32(0), view.getUint32(4), view.getUint32(8), view.getUint32(12)]);
    if (this.s.every((v) => v === 0)) this.s[0] = 0x9e3779b9;
  }
  /** Uniform in [0, 2^32). */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }
  /** Uniform in [0, 1). */
  next(): number {
    return this.nextUint32() / 4294967296;
  }
  range(min: number, max: number): number {
    return min + (max - min) * this.next();
  }
  int(min: number, maxInclusive: number): number {
    return min + Math.floor(this.next() * (maxInclusive - min + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export function promptSeed(prompt: string, variant = 0): Buffer {
  const h = createHash('sha256').update(prompt, 'utf8');
  if (variant) h.update(`\u0000variant:${variant}`);
  return h.digest();
}

const hsl = (h: number, s: number, l: number): string => `hsl(${(((h % 360) + 360) % 360) | 0},${Math.round(s)}%,${Math.round(l)}%)`;

/** XML text content: escaped, with characters XML 1.0 forbids (and lone surrogates) removed. */
export function escapeXml(text: string): string {
  return text
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g, '')
    .replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

/** Approximate advance of a character in em: wide for CJK and other full-width scripts. */
function charWidth(ch: string): number {
  const cp = ch.codePointAt(0) ?? 0;
  if (
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0xa4cf) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    cp >= 0x1f300
  ) {
    return 1;
  }
  if (ch === ' ') return 0.32;
  if (/[A-Z0-9WM@]/.test(ch)) return 0.68;
  return 0.56;
}

const textWidth = (s: string): number => [...s].reduce((a, c) => a + charWidth(c), 0);

/**
 * Greedy word wrap to `maxEm` per line; words longer than a line (and CJK runs, which have no
 * spaces) break between characters. At most `maxLines`; the last one gets an ellipsis if cut.
 */
export function wrapText(text: string, maxEm: number, maxLines: number): string[] {
  const words = text.trim().split(/\s+/).filter(Boolean);
  const lines: string[] = [];
  let line = '';
  let truncated = false;
  const push = (): boolean => {
    lines.push(line);
    line = '';
    return lines.length < maxLines;
  };
  outer: for (const word of words) {
    const candidate = line ? `${line} ${word}` : word;
    if (textWidth(candidate) <= maxEm) {
      line = candidate;
      continue;
    }
    if (line && textWidth(word) <= maxEm) {
      if (!push()) {
        truncated = true;
        break;
      }
      line = word;
      continue;
    }
    // Break the word itself between characters.
    if (line) line += ' ';
    for (const ch of word) {
      if (line.trim() && textWidth(line + ch) > maxEm) {
        if (!push()) {
          truncated = true;
          break outer;
        }
        line = ch;
      } else {
        line += ch;
      }
    }
  }
  if (!truncated && line.trim()) lines.push(line.trim());
  const out = lines.map((l) => l.trim()).filter(Boolean);
  if (truncated && out.length) {
    let last = out[out.length - 1];
    while (last.length > 1 && textWidth(`${last}…`) > maxEm) last = [...last].slice(0, -1).join('');
    out[out.length - 1] = `${last.trimEnd()}…`;
  }
  return out;
}

export interface PromptSvgOptions {
  /** Drawn over a reference image: the background is translucent so the reference shows. */
  overReference?: boolean;
  /** Another deterministic picture for the same prompt (video scenes). */
  variant?: number;
  /** Write the prompt on the picture (default true). */
  withText?: boolean;
}

/** The SVG for a prompt at a size. Sizes only scale the drawing; the composition is the prompt's. */
export function promptSvg(prompt: string, width: number, height: number, options: PromptSvgOptions = {}): string {
  const rng = new Prng(promptSeed(prompt, options.variant ?? 0));
  const W = width;
  const H = height;
  const m = Math.min(W, H);
  const f = (n: number): string => (Math.round(n * 10) / 10).toString();

  // Palette: a base hue and a harmony scheme.
  const baseHue = rng.range(0, 360);
  const scheme = rng.pick([
    [0, 30, -30, 180, 200],
    [0, 120, 240, 60, 300],
    [0, 150, 210, 30, 180],
    [0, 20, 40, 60, 200],
  ]);
  const sat = rng.range(45, 85);
  const palette = scheme.map((offset, i) => hsl(baseHue + offset, sat + rng.range(-10, 10), 30 + ((i * 13 + rng.int(0, 30)) % 45)));
  const bgA = hsl(baseHue + rng.range(-20, 20), sat * 0.8, rng.range(12, 30));
  const bgB = hsl(baseHue + rng.pick([150, 180, 210]), sat * 0.7, rng.range(45, 70));
  const angle = rng.range(0, 360);
  const gx = Math.cos((angle * Math.PI) / 180) / 2;
  const gy = Math.sin((angle * Math.PI) / 180) / 2;
  const over = options.overReference === true;

  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`,
    '<defs>',
    `<linearGradient id="bg" x1="${f(0.5 - gx)}" y1="${f(0.5 - gy)}" x2="${f(0.5 + gx)}" y2="${f(0.5 + gy)}">`,
    `<stop offset="0" stop-color="${bgA}"/><stop offset="1" stop-color="${bgB}"/></linearGradient>`,
    `<radialGradient id="glow" cx="${f(rng.range(0.2, 0.8))}" cy="${f(rng.range(0.2, 0.8))}" r="0.6">`,
    `<stop offset="0" stop-color="${palette[3]}" stop-opacity="0.55"/><stop offset="1" stop-color="${palette[3]}" stop-opacity="0"/></radialGradient>`,
    '</defs>',
    `<rect width="${W}" height="${H}" fill="url(#bg)"${over ? ' opacity="0.4"' : ''}/>`,
    `<rect width="${W}" height="${H}" fill="url(#glow)"/>`,
  );

  const count = rng.int(7, 14);
  for (let i = 0; i < count; i++) {
    const color = palette[rng.int(0, palette.length - 1)];
    const opacity = (over ? 0.5 : 1) * rng.range(0.35, 0.85);
    const cx = rng.range(-0.1, 1.1) * W;
    const cy = rng.range(-0.1, 1.1) * H;
    const size = rng.range(0.06, 0.32) * m;
    const kind = rng.pick(['circle', 'rect', 'blob', 'blob', 'ring'] as const);
    if (kind === 'circle') {
      parts.push(`<circle cx="${f(cx)}" cy="${f(cy)}" r="${f(size)}" fill="${color}" fill-opacity="${f(opacity)}"/>`);
    } else if (kind === 'ring') {
      parts.push(
        `<circle cx="${f(cx)}" cy="${f(cy)}" r="${f(size)}" fill="none" stroke="${color}" stroke-width="${f(size * rng.range(0.08, 0.25))}" stroke-opacity="${f(opacity)}"/>`,
      );
    } else if (kind === 'rect') {
      const w = size * rng.range(1, 2.4);
      const h = size * rng.range(0.6, 1.6);
      const rot = rng.range(-45, 45);
      parts.push(
        `<rect x="${f(cx - w / 2)}" y="${f(cy - h / 2)}" width="${f(w)}" height="${f(h)}" rx="${f(Math.min(w, h) * rng.range(0, 0.3))}" fill="${color}" fill-opacity="${f(opacity)}" transform="rotate(${f(rot)} ${f(cx)} ${f(cy)})"/>`,
      );
    } else {
      parts.push(`<path d="${blobPath(rng, cx, cy, size, f)}" fill="${color}" fill-opacity="${f(opacity)}"/>`);
    }
  }

  const text = (prompt ?? '').replace(/\s+/g, ' ').trim();
  if (options.withText !== false && text) parts.push(textBlock(text, W, H, rng, f));
  parts.push('</svg>');
  return parts.join('');
}

/** A smooth closed blob: points around a centre joined by a Catmull-Rom spline (as cubic Béziers). */
function blobPath(rng: Prng, cx: number, cy: number, r: number, f: (n: number) => string): string {
  const n = rng.int(5, 9);
  const pts: [number, number][] = [];
  for (let i = 0; i < n; i++) {
    const a = (i / n) * Math.PI * 2;
    const rr = r * rng.range(0.55, 1.25);
    pts.push([cx + Math.cos(a) * rr, cy + Math.sin(a) * rr]);
  }
  let d = `M${f(pts[0][0])},${f(pts[0][1])}`;
  for (let i = 0; i < n; i++) {
    const p0 = pts[(i - 1 + n) % n];
    const p1 = pts[i];
    const p2 = pts[(i + 1) % n];
    const p3 = pts[(i + 2) % n];
    const c1 = [p1[0] + (p2[0] - p0[0]) / 6, p1[1] + (p2[1] - p0[1]) / 6];
    const c2 = [p2[0] - (p3[0] - p1[0]) / 6, p2[1] - (p3[1] - p1[1]) / 6];
    d += `C${f(c1[0])},${f(c1[1])} ${f(c2[0])},${f(c2[1])} ${f(p2[0])},${f(p2[1])}`;
  }
  return `${d}Z`;
}

/** The prompt, wrapped to at most four lines on a translucent panel; size relative to the image. */
function textBlock(text: string, W: number, H: number, rng: Prng, f: (n: number) => string): string {
  const m = Math.min(W, H);
  const maxWidth = W * 0.84;
  const maxLines = 4;
  let fontSize = Math.max(6, m * 0.07);
  let lines = wrapText(text, maxWidth / fontSize, maxLines);
  // Long prompts: shrink (down to 60%) before cutting with an ellipsis.
  for (let i = 0; i < 4 && lines.length >= maxLines && lines[lines.length - 1].endsWith('…'); i++) {
    fontSize *= 0.88;
    lines = wrapText(text, maxWidth / fontSize, maxLines);
  }
  const lineHeight = fontSize * 1.25;
  const blockW = Math.min(W * 0.92, Math.max(...lines.map((l) => textWidth(l))) * fontSize + fontSize * 1.2);
  const blockH = lines.length * lineHeight + fontSize * 0.8;
  const place = rng.pick(['bottom', 'center', 'top'] as const);
  const top = place === 'bottom' ? H - blockH - m * 0.06 : place === 'top' ? m * 0.06 : (H - blockH) / 2;
  const left = (W - blockW) / 2;
  const out: string[] = [
    `<rect x="${f(left)}" y="${f(top)}" width="${f(blockW)}" height="${f(blockH)}" rx="${f(fontSize * 0.4)}" fill="#000" fill-opacity="0.42"/>`,
    `<text x="${f(W / 2)}" font-family="DejaVu Sans, Noto Sans, Noto Sans CJK SC, sans-serif" font-size="${f(fontSize)}" fill="#fff" text-anchor="middle">`,
  ];
  lines.forEach((line, i) => {
    const y = top + fontSize * 0.4 + lineHeight * i + fontSize * 0.95;
    out.push(`<tspan x="${f(W / 2)}" y="${f(y)}">${escapeXml(line)}</tspan>`);
  });
  out.push('</text>');
  return out.join('');
}

export interface RenderOptions {
  prompt: string;
  width: number;
  height: number;
  /** A reference image on disk: resized to cover the frame and blended under the drawing. */
  reference?: string | null;
  /** sharp's limitInputPixels for decoding the reference (client data); default sharp's own. */
  maxInputPixels?: number;
  variant?: number;
  withText?: boolean;
  /** PNG zlib level; lower is faster and larger. */
  compressionLevel?: number;
}

/**
 * The sharp task that renders the prompt's picture of exactly width × height to `output`: a PNG
 * file, or its RGB pixels (`{ raw: true }`). The SVG is built here; sharp only rasterises it.
 */
export function promptRenderTask(options: RenderOptions, output: SharpTask['output']): SharpTask {
  const { prompt, width, height, reference } = options;
  const svg = promptSvg(prompt, width, height, { overReference: Boolean(reference), variant: options.variant, withText: options.withText });
  const encode: SharpOp[] = 'raw' in output ? [] : [['png', { compressionLevel: options.compressionLevel ?? 6, adaptiveFiltering: false }]];
  if (reference) {
    return {
      input: { kind: 'file', path: reference },
      // The reference is client data: held to the pixel limit. The drawing is ours and may be bigger.
      inputOptions: { limitInputPixels: options.maxInputPixels ?? true, failOn: 'none' },
      ops: [
        ['rotate'],
        ['flatten', { background: '#000000' }],
        ['resize', width, height, { fit: 'cover', position: 'centre' }],
        ['composite', [{ input: { svg }, limitInputPixels: false }]],
        ['removeAlpha'],
        ...encode,
      ],
      output,
    };
  }
  return { input: { kind: 'svg', svg }, inputOptions: { limitInputPixels: false }, ops: [['removeAlpha'], ...encode], output };
}

/**
 * Renders the prompt's picture to a PNG file of exactly width × height (RGB), in the sharp child
 * process (cancellable). The reference must already be known to be readable (callers validate
 * inputs first).
 */
export async function renderPromptImage(options: RenderOptions, outPath: string, signal: AbortSignal): Promise<void> {
  await runSharpTask(promptRenderTask(options, { path: outPath }), signal);
}
