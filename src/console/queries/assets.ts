import type { Selectable } from 'kysely';
import type { AssetsTable, DbHandle } from '../../db/index.ts';
import { iso } from '../../lib/clock.ts';
import { readConsole } from './reader.ts';

/** An asset as the console lists it (any client's). */
export interface AssetView {
  id: string;
  clientId: string;
  kind: string;
  name: string;
  mimeType: string;
  bytes: number;
  width: number | null;
  height: number | null;
  durationSeconds: number | null;
  source: string;
  jobId: string | null;
  createdAt: string;
}

const toAssetView = (row: Selectable<AssetsTable>): AssetView => ({
  id: row.id,
  clientId: row.client_id,
  kind: row.kind,
  name: row.name,
  mimeType: row.mime_type,
  bytes: Number(row.bytes),
  width: row.width === null ? null : Number(row.width),
  height: row.height === null ? null : Number(row.height),
  durationSeconds: row.duration_seconds === null ? null : Number(row.duration_seconds),
  source: row.source,
  jobId: row.job_id,
  createdAt: iso(Math.floor(Number(row.created_at_us) / 1000)) ?? '',
});

export interface AssetFilter {
  clientId?: string;
  kind?: string;
  jobId?: string;
  /** The last id of the previous page (asset ids are time-ordered), exclusive. */
  before?: string;
  limit?: number;
}

/** Assets across clients, newest first, keyset-paged by id. */
export async function listAssets(handle: DbHandle, filter: AssetFilter): Promise<{ assets: AssetView[]; nextBefore: string | null }> {
  return readConsole(handle, async (db) => {
    const limit = Math.min(Math.max(filter.limit ?? 48, 1), 200);
    let select = db.selectFrom('assets').selectAll();
    if (filter.clientId) select = select.where('client_id', '=', filter.clientId);
    if (filter.kind) select = select.where('kind', '=', filter.kind);
    if (filter.jobId) select = select.where('job_id', '=', filter.jobId);
    if (filter.before) select = select.where('id', '<', filter.before);
    const rows = await select
      .orderBy('id', 'desc')
      .limit(limit + 1)
      .execute();
    const kept = rows.slice(0, limit);
    return { assets: kept.map(toAssetView), nextBefore: rows.length > limit ? kept[kept.length - 1].id : null };
  });
}

/** The given assets (any client's), in the order of `ids`; unknown ids are skipped. */
export async function assetsByIds(handle: DbHandle, ids: readonly string[]): Promise<AssetView[]> {
  return readConsole(handle, async (db) => {
    if (ids.length === 0) return [];
    const rows = await db
      .selectFrom('assets')
      .selectAll()
      .where('id', 'in', [...ids])
      .execute();
    const byId = new Map(rows.map((r) => [r.id, toAssetView(r)]));
    return ids.map((id) => byId.get(id)).filter((a): a is AssetView => a !== undefined);
  });
}

export async function assetRow(handle: DbHandle, id: string): Promise<Selectable<AssetsTable> | undefined> {
  return readConsole(handle, async (db) => {
    return db.selectFrom('assets').selectAll().where('id', '=', id).executeTakeFirst();
  });
}
