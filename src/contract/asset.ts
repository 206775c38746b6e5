/** The asset vocabulary: kinds, sources, and an asset as the API shows it. */

export const ASSET_KINDS = ['image', 'video', 'audio', 'mask', 'file'] as const;
export type AssetKind = (typeof ASSET_KINDS)[number];
export const ASSET_SOURCES = ['upload', 'url', 'output'] as const;

/** An asset as the API shows it. */
export interface Asset {
  id: string;
  kind: AssetKind;
  name: string;
  mimeType: string;
  bytes: number;
  sha256: string;
  width: number | null;
  height: number | null;
  durationSeconds: number | null;
  source: (typeof ASSET_SOURCES)[number];
  sourceUrl: string | null;
  jobId: string | null;
  downloadUrl: string;
  createdAt: string;
}
