import { iso } from '../lib/clock.ts';
import type { AssetsTable } from '../db/index.ts';

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

export function toAsset(row: AssetsTable, baseUrl: string): Asset {
  return {
    id: row.id,
    kind: row.kind as AssetKind,
    name: row.name,
    mimeType: row.mime_type,
    bytes: Number(row.bytes),
    sha256: row.sha256,
    width: row.width,
    height: row.height,
    durationSeconds: row.duration_seconds,
    source: row.source as Asset['source'],
    sourceUrl: row.source_url,
    jobId: row.job_id,
    downloadUrl: `${baseUrl}/api/v1/assets/${row.id}/download`,
    createdAt: iso(Math.floor(Number(row.created_at_us) / 1000)),
  };
}
