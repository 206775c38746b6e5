import { isTerminal, type StatusDetail } from '../contract/index.ts';
import type { JobsTable, Tx } from '../db/index.ts';
import { iso } from '../lib/clock.ts';
import { circuitStates } from './circuit.ts';
import { parseEngineState } from './claimed-job.ts';
import { runningCounts } from './claim.ts';
import { WAITING } from './transitions.ts';

/** What the queue knows beyond the job rows themselves, read by `queueFactsFor`. */
interface QueueFacts {
  now: number;
  /** ZHINIAN_MAX_ATTEMPTS, for "attempt n of m". */
  maxAttempts: number;
  /** Engines whose circuit is open, with when they are tried again. */
  openCircuits: ReadonlyMap<string, number>;
  /** Per client of the rows: jobs it runs and its cap (0: none). */
  clients: ReadonlyMap<string, { running: number; max: number }>;
  /** Per capped engine of the rows: jobs it runs and its cap. */
  engines: ReadonlyMap<string, { running: number; max: number }>;
}

export interface QueueFactsContext {
  now: number;
  maxAttempts: number;
  /** A client's running cap in effect (0: none). */
  maxRunningOf(clientId: string): Promise<number>;
  /** An engine's concurrency cap across all workers (undefined: uncapped, e.g. the local engine). */
  engineCapOf(engine: string): number | undefined;
}

/** A job waits to be claimed: queued, or given back and due (handed back, retry time reached). */
const waitsForClaim = (row: JobsTable, now: number) => row.status === 'queued' || (row.status === 'running' && row.lease_owner === null && Number(row.run_at ?? 0) <= now);

/**
 * Why a queued or running job is not simply being worked on (CONTRACT "Why a job waits"), from
 * the job's own row and the queue's state: the one function the API, the live events and the
 * console use. Null: it is being worked on, is just waiting its turn, or has ended.
 */
function statusDetailOf(row: JobsTable, facts: QueueFacts): StatusDetail | null {
  if (isTerminal(row.status)) return null;
  const { now } = facts;
  if (row.status === 'running' && row.lease_owner !== null) {
    if (row.waiting === WAITING.providerRateLimited && row.waiting_until !== null && Number(row.waiting_until) > now) {
      return detail('provider_rate_limited', `${row.engine} answered "too many requests"; the next try is not before then.`, Number(row.waiting_until));
    }
    const state = parseEngineState(row.engine_state);
    if (state?.phase === 'submitted') return detail('at_provider', `Submitted to ${row.engine} (task ${state.handle.taskId}); waiting for its result.`, null);
    return null;
  }
  if (row.status === 'running' && row.lease_owner === null && row.waiting === WAITING.retry && Number(row.run_at ?? 0) > now) {
    const n = Number(row.attempts);
    return detail('retry_backoff', `Attempt ${n} of ${facts.maxAttempts} failed with a transient error; it is tried again then.`, Number(row.run_at));
  }
  if (!waitsForClaim(row, now)) return null;
  const openUntil = facts.openCircuits.get(row.engine);
  if (openUntil !== undefined) return detail('engine_circuit_open', `Engine ${row.engine} is failing; it gets new work again then.`, openUntil);
  const client = facts.clients.get(row.client_id);
  if (client && client.max > 0 && client.running >= client.max) {
    return detail('client_running_cap', `This client already runs ${client.running} jobs, its cap (maxRunning ${client.max}); the job starts when one ends.`, null);
  }
  const engine = facts.engines.get(row.engine);
  if (engine && engine.running >= engine.max) return detail('engine_busy', `Every slot of engine ${row.engine} is taken (${engine.max} at once).`, null);
  return null;
}

function detail(code: StatusDetail['code'], message: string, retryAt: number | null): StatusDetail {
  return { code, message, retryAt: retryAt === null ? null : iso(retryAt) };
}

/**
 * Reads what `statusDetailOf` needs for `rows`, with the queue's own functions (the claim's
 * running counts, the circuit breaker's states), and only what can matter: nothing when no row
 * waits to be claimed; circuits and slots only of capped (remote) engines, the only ones that
 * have them; running counts only of clients with a cap.
 */
async function queueFactsFor(db: Tx, rows: readonly JobsTable[], ctx: QueueFactsContext): Promise<QueueFacts> {
  const facts = { now: ctx.now, maxAttempts: ctx.maxAttempts, openCircuits: new Map<string, number>(), clients: new Map(), engines: new Map() };
  const waiting = rows.filter((r) => waitsForClaim(r, ctx.now));
  if (waiting.length === 0) return facts;
  const capped = [...new Set(waiting.map((r) => r.engine))].filter((e) => ctx.engineCapOf(e) !== undefined);
  const clientIds = [...new Set(waiting.map((r) => r.client_id))];
  const caps = await Promise.all(clientIds.map((id) => ctx.maxRunningOf(id)));
  const cappedClients = clientIds.filter((_, i) => (caps[i] ?? 0) > 0);
  const [circuits, clientRunning, engineRunning] = await Promise.all([
    circuitStates(db, capped, ctx.now),
    runningCounts(db, 'client_id', cappedClients),
    runningCounts(db, 'engine', capped),
  ]);
  clientIds.forEach((id, i) => facts.clients.set(id, { running: clientRunning.get(id) ?? 0, max: caps[i] ?? 0 }));
  for (const e of capped) facts.engines.set(e, { running: engineRunning.get(e) ?? 0, max: ctx.engineCapOf(e) ?? 0 });
  return { ...facts, openCircuits: circuits.open };
}

/** `rows` with their status details, in order. */
export async function statusDetailsOf(db: Tx, rows: readonly JobsTable[], ctx: QueueFactsContext): Promise<(StatusDetail | null)[]> {
  const facts = await queueFactsFor(db, rows, ctx);
  return rows.map((row) => statusDetailOf(row, facts));
}
