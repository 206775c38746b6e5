/** What a client can ask for: the capabilities and the values of their parameters. */

export const CAPABILITIES = ['image.generate', 'image.inpaint', 'image.upscale', 'video.generate'] as const;
export type Capability = (typeof CAPABILITIES)[number];

export const VIDEO_RATIOS = ['16:9', '4:3', '1:1', '3:4', '9:16', '21:9', 'adaptive'] as const;
export type VideoRatio = (typeof VIDEO_RATIOS)[number];
export const VIDEO_RESOLUTIONS = ['480p', '720p', '1080p'] as const;
export type VideoResolution = (typeof VIDEO_RESOLUTIONS)[number];
export const UPSCALE_RESOLUTIONS = ['2k', '4k', '8k'] as const;
export type UpscaleResolution = (typeof UPSCALE_RESOLUTIONS)[number];
export const IMAGE_QUALITIES = ['low', 'medium', 'high', 'auto'] as const;

/** Long side of an upscaled image, per `resolution`. */
export const UPSCALE_LONG_SIDE: Record<UpscaleResolution, number> = { '2k': 2048, '4k': 3840, '8k': 7680 };
/** Short side of a generated video, per `settings.resolution`. */
export const VIDEO_SHORT_SIDE: Record<VideoResolution, number> = { '480p': 480, '720p': 720, '1080p': 1080 };

export interface Material {
  type: 'image' | 'video' | 'audio';
  url?: string;
  assetId?: string;
  label?: string;
}

/** Validated request fields with defaults filled in (what `job.params` holds). */
export interface JobParams {
  width?: number;
  height?: number;
  scale?: number;
  quality?: (typeof IMAGE_QUALITIES)[number];
  force_single?: boolean;
  resolution?: UpscaleResolution;
  settings?: { ratio: VideoRatio; duration: number; resolution: VideoResolution };
  materials?: Material[];
  imageUrls?: string[];
  inputUrls?: string[];
}
