import type { DbHandle } from '../../db/index.ts';
import { circuitViews, runningCounts, type CircuitView } from '../../queue/index.ts';
import { isRemoteEngine } from '../../engines/engine.ts';
import type { EngineRegistry } from '../../engines/registry.ts';
import { iso } from '../../lib/clock.ts';
import { readConsole } from './reader.ts';

/** Circuits of the named engines (closed for engines without a row), as the claim sees them. */
export async function circuits(handle: DbHandle, engines: readonly string[], now: number): Promise<CircuitView[]> {
  return readConsole(handle, (db) => circuitViews(db, engines, now));
}

export interface EngineView {
  name: string;
  kind: 'remote' | 'local';
  capabilities: readonly string[];
  /** Remote engines: tasks in flight across all workers at most. */
  maxConcurrency: number | null;
  circuit: CircuitView;
  running: number;
  queued: number;
  /** Running under a lease: what the engine's cap counts (queue/claim.ts). */
  held: number;
  /** Running jobs holding a provider task (engine_state set). */
  inFlightRemote: number;
  lastErrors: { jobId: string; code: string | null; message: string | null; at: string | null }[];
}

const LAST_ERRORS = 5;

/** Every configured engine with its circuit, cap usage, queue and latest failures. */
export async function engineViews(handle: DbHandle, registry: EngineRegistry, now: number): Promise<EngineView[]> {
  const engines = registry.all();
  const names = engines.map((e) => e.name);
  return readConsole(handle, async (db) => {
    const [circuitList, held, counts, inFlight] = await Promise.all([
      circuitViews(db, names, now),
      runningCounts(db, 'engine', names),
      db
        .selectFrom('jobs')
        .select(['engine', 'status', (eb) => eb.fn.countAll().as('n')])
        .where('status', 'in', ['queued', 'running'])
        .groupBy(['engine', 'status'])
        .execute(),
      db
        .selectFrom('jobs')
        .select(['engine', (eb) => eb.fn.countAll().as('n')])
        .where('status', '=', 'running')
        .where('engine_state', 'is not', null)
        .groupBy('engine')
        .execute(),
    ]);
    const count = (engine: string, status: string) => Number(counts.find((c) => c.engine === engine && c.status === status)?.n ?? 0);
    const views: EngineView[] = [];
    for (const [i, engine] of engines.entries()) {
      const failed = await db
        .selectFrom('jobs')
        .select(['id', 'error_code', 'error_message', 'finished_at'])
        .where('engine', '=', engine.name)
        .where('status', '=', 'failed')
        .orderBy('id', 'desc')
        .limit(LAST_ERRORS)
        .execute();
      views.push({
        name: engine.name,
        kind: isRemoteEngine(engine) ? 'remote' : 'local',
        capabilities: engine.capabilities,
        maxConcurrency: isRemoteEngine(engine) ? engine.maxConcurrency : null,
        circuit: circuitList[i]!,
        running: count(engine.name, 'running'),
        held: held.get(engine.name) ?? 0,
        queued: count(engine.name, 'queued'),
        inFlightRemote: Number(inFlight.find((r) => r.engine === engine.name)?.n ?? 0),
        lastErrors: failed.map((f) => ({ jobId: f.id, code: f.error_code, message: f.error_message, at: iso(f.finished_at === null ? null : Number(f.finished_at)) })),
      });
    }
    return views;
  });
}
