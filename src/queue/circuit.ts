import type { DbHandle, Tx } from '../db/index.ts';
import type { Notifier } from '../lib/notifier.ts';
import { transact } from './changes.ts';
import { fairKeyShift } from './fair-order.ts';
import { applyTransition } from './transitions.ts';

/**
 * A circuit breaker per engine, kept in the database so every worker sees the same state.
 * `FAILURE_THRESHOLD` provider failures in a row open it: the engine gets no new work for
 * `COOL_DOWN_MS`: the claim itself skips its new jobs (claim.ts), and jobs waiting for it that
 * may move are moved to the next engine (`rerouteFromOpenCircuits`). After the cool-down one
 * probe is let through (taken inside the claim's transaction, so only one worker probes); its
 * success closes the circuit, its failure reopens it.
 */
const FAILURE_THRESHOLD = 5;
const COOL_DOWN_MS = 30_000;

/**
 * The circuits of `engines` that are not closed: `open` ones (with when they are tried again) get
 * no new work; `halfOpen` ones (cool-down over) let one probe through, which `takeProbe` claims
 * inside the claim's transaction.
 */
export async function circuitStates(tx: Tx, engines: readonly string[], now: number): Promise<{ open: Map<string, number>; halfOpen: Set<string> }> {
  const open = new Map<string, number>();
  const halfOpen = new Set<string>();
  if (engines.length === 0) return { open, halfOpen };
  const rows = await tx.selectFrom('engine_circuits').selectAll().where('engine', 'in', engines).where('consecutive_failures', '>=', FAILURE_THRESHOLD).execute();
  for (const row of rows) {
    if (row.open_until !== null && Number(row.open_until) > now) open.set(row.engine, Number(row.open_until));
    else halfOpen.add(row.engine);
  }
  return { open, halfOpen };
}

/** A half-open circuit lets one job through: this claims that probe (the circuit is open again until it reports). */
export async function takeProbe(tx: Tx, engine: string, now: number): Promise<void> {
  await tx
    .updateTable('engine_circuits')
    .set({ open_until: now + COOL_DOWN_MS, updated_at: now })
    .where('engine', '=', engine)
    .execute();
}

/**
 * Moves jobs waiting for an engine whose circuit is open to the next engine of their
 * capability: jobs nobody holds, not pinned by the client, never submitted to a provider.
 * Returns how many moved.
 */
export async function rerouteFromOpenCircuits(
  handle: DbHandle,
  opts: { now: number; capabilities: readonly string[]; nextEngine: (capability: string, engine: string) => string | null; notifier: Notifier | null },
): Promise<number> {
  const open = await handle.db.selectFrom('engine_circuits').select('engine').where('consecutive_failures', '>=', FAILURE_THRESHOLD).where('open_until', '>', opts.now).execute();
  let moved = 0;
  for (const { engine } of open) {
    for (const capability of opts.capabilities) {
      const next = opts.nextEngine(capability, engine);
      if (!next) continue;
      // One statement per status, each on its own index; queued jobs keep their distance from
      // the head of the fair order (fair-order.ts).
      moved += await transact(handle, opts.notifier, async (step) => {
        const shift = await fairKeyShift(step.tx, engine, next);
        return (await applyTransition(step, 'rerouteWaiting', { engine, capability }, { engine: next, shift, now: opts.now })).length;
      });
    }
  }
  return moved;
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
