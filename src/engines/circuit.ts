import type { DbHandle } from '../db/index.ts';

/**
 * A circuit breaker per engine, kept in the database so every worker sees the same state.
 * `FAILURE_THRESHOLD` provider failures in a row open it: the engine gets no new work for
 * `COOL_DOWN_MS`. After that one probe is let through (taken with a conditional update, so
 * only one worker probes); its success closes the circuit, its failure reopens it.
 */
export const FAILURE_THRESHOLD = 5;
export const COOL_DOWN_MS = 30_000;

export async function mayUseEngine(handle: DbHandle, engine: string, now: number): Promise<boolean> {
  const row = await handle.db.selectFrom('engine_circuits').selectAll().where('engine', '=', engine).executeTakeFirst();
  if (!row || row.consecutive_failures < FAILURE_THRESHOLD) return true;
  if (row.open_until !== null && Number(row.open_until) > now) return false;
  const probe = await handle.db
    .updateTable('engine_circuits')
    .set({ open_until: now + COOL_DOWN_MS, updated_at: now })
    .where('engine', '=', engine)
    .where((eb) => eb.or([eb('open_until', 'is', null), eb('open_until', '<=', now)]))
    .executeTakeFirst();
  return Number(probe.numUpdatedRows) === 1;
}

export async function recordEngineFailure(handle: DbHandle, engine: string, now: number): Promise<void> {
  await handle.db
    .insertInto('engine_circuits')
    .values({ engine, consecutive_failures: 1, open_until: FAILURE_THRESHOLD <= 1 ? now + COOL_DOWN_MS : null, updated_at: now })
    .onConflict((oc) =>
      oc.column('engine').doUpdateSet((eb) => ({
        consecutive_failures: eb('engine_circuits.consecutive_failures', '+', 1),
        open_until: eb
          .case()
          .when(eb('engine_circuits.consecutive_failures', '+', 1), '>=', FAILURE_THRESHOLD)
          .then(now + COOL_DOWN_MS)
          .else(eb.ref('engine_circuits.open_until'))
          .end(),
        updated_at: now,
      })),
    )
    .execute();
}

export async function recordEngineSuccess(handle: DbHandle, engine: string, now: number): Promise<void> {
  await handle.db
    .updateTable('engine_circuits')
    .set({ consecutive_failures: 0, open_until: null, updated_at: now })
    .where('engine', '=', engine)
    .where('consecutive_failures', '>', 0)
    .execute();
}
