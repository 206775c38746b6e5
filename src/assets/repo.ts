import type { Asset, AssetKind } from '../contract/index.ts';
import { iso } from '../lib/clock.ts';
import { nextSortKey, type AssetsTable, type Db, type DbHandle, type Tx } from '../db/index.ts';

/** Where an asset's bytes are downloaded: the one place this path is written. */
export const ASSET_DOWNLOAD_ROUTE = '/api/v1/assets/:id/download';
export const assetDownloadPath = (assetId: string) => ASSET_DOWNLOAD_ROUTE.replace(':id', assetId);

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
    downloadUrl: `${baseUrl}${assetDownloadPath(row.id)}`,
    createdAt: iso(Math.floor(Number(row.created_at_us) / 1000)),
  };
}

/**
 * The one statement that writes asset rows (uploads, URL assets and, inside the transaction
 * that settles a job, its outputs). Each row gets its per-client sort key here.
 */
export async function insertAssetRows(tx: Tx, dialect: DbHandle['dialect'], rows: readonly AssetsTable[], now: number): Promise<AssetsTable[]> {
  const saved: AssetsTable[] = [];
  for (const row of rows) {
    saved.push(
      await tx
        .insertInto('assets')
        .values({ ...row, created_at_us: nextSortKey(dialect, 'assets', row.client_id, now) })
        .returningAll()
        .executeTakeFirstOrThrow(),
    );
  }
  return saved;
}

/** Kinds of the client's own assets among `ids`; an id that is unknown or another client's is absent. */
export async function findAssetKinds(db: Db, clientId: string, ids: readonly string[]): Promise<Map<string, AssetKind>> {
  const kinds = new Map<string, AssetKind>();
  if (ids.length === 0) return kinds;
  const rows = await db.selectFrom('assets').select(['id', 'kind']).where('client_id', '=', clientId).where('id', 'in', ids).execute();
  for (const row of rows) kinds.set(row.id, row.kind as AssetKind);
  return kinds;
}
