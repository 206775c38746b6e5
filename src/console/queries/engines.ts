import type { Db, DbHandle } from '../../db/index.ts';
import { isRemoteEngine } from '../../engines/engine.ts';
import type { EngineRegistry } from '../../engines/registry.ts';
import { iso } from '../../lib/clock.ts';
import { readConsole } from './reader.ts';

type CircuitState = 'closed' | 'open' | 'half-open';

export interface CircuitView {
  engine: string;
  state: CircuitState;
  consecutiveFailures: number;
  /** While open: when the cool-down ends (then one probe is let through). */
  openUntil: string | null;
}

/**
 * An engine's circuit as queue/circuit.ts keeps it: `open_until` is set only once the failure
 * threshold is reached; in the future the engine gets no new work (open); passed, one probe
 * may go (half-open); a success clears it (closed).
 */
function toCircuit(engine: string, row: { consecutive_failures: number; open_until: number | null } | undefined, now: number): CircuitView {
  const failures = Number(row?.consecutive_failures ?? 0);
  const openUntil = row?.open_until === null || row?.open_until === undefined ? null : Number(row.open_until);
  const state: CircuitState = openUntil === null ? 'closed' : openUntil > now ? 'open' : 'half-open';
  return { engine, state, consecutiveFailures: failures, openUntil: state === 'open' ? iso(openUntil) : null };
}

export async function circuitOf(handle: DbHandle, engine: string, now = Date.now()): Promise<CircuitView> {
  const row = await readConsole(handle, (db) => db.selectFrom('engine_circuits').selectAll().where('engine', '=', engine).executeTakeFirst());
  return toCircuit(engine, row, now);
}

/** Circuits of the named engines (closed for engines without a row). */
export async function circuits(handle: DbHandle, engines: readonly string[], now: number): Promise<CircuitView[]> {
  return readConsole(handle, (db) => circuitsIn(db, engines, now));
}

async function circuitsIn(db: Db, engines: readonly string[], now: number): Promise<CircuitView[]> {
  const rows =
    engines.length === 0
      ? []
      : await db
          .selectFrom('engine_circuits')
          .selectAll()
          .where('engine', 'in', [...engines])
          .execute();
  const byEngine = new Map(rows.map((r) => [r.engine, r]));
  return engines.map((e) => toCircuit(e, byEngine.get(e), now));
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
    const [circuitList, counts, inFlight] = await Promise.all([
      circuitsIn(db, names, now),
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
        circuit: circuitList[i],
        running: count(engine.name, 'running'),
        queued: count(engine.name, 'queued'),
        inFlightRemote: Number(inFlight.find((r) => r.engine === engine.name)?.n ?? 0),
        lastErrors: failed.map((f) => ({ jobId: f.id, code: f.error_code, message: f.error_message, at: iso(f.finished_at === null ? null : Number(f.finished_at)) })),
      });
    }
    return views;
  });
}
