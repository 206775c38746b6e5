import { sql, type SelectQueryBuilder } from 'kysely';
import { formatCursor, parseCursor } from '../lib/cursor.ts';
import type { Database } from './schema.ts';

/**
 * One page of a client's rows, newest first, by the per-client unique sort key `created_at_us`.
 * `before` is exclusive and the keys are unique, so pages never overlap or skip; one row more
 * than `limit` is read to learn whether another page follows, and `nextBefore` is the last
 * row's key.
 */
export async function keysetPage<TB extends 'jobs' | 'assets', O extends { created_at_us: number }>(
  select: SelectQueryBuilder<Database, TB, O>,
  page: { before: string | undefined; limit: number },
): Promise<{ rows: O[]; nextBefore: string | null }> {
  const key = sql.ref<number>('created_at_us');
  const from = page.before === undefined ? select : select.where(sql<boolean>`${key} < ${parseCursor(page.before)}`);
  const rows = await from
    .orderBy(key, 'desc')
    .limit(page.limit + 1)
    .execute();
  const kept = rows.slice(0, page.limit);
  const nextBefore = rows.length > page.limit ? formatCursor(Number(kept[kept.length - 1].created_at_us)) : null;
  return { rows: kept, nextBefore };
}
