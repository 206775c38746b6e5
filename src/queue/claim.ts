import { type Expression, sql } from 'kysely';
import type { DbHandle, JobsTable, Tx } from '../db/index.ts';
import type { Notifier } from '../lib/notifier.ts';
import { transact, transactOne } from './changes.ts';
import { circuitStates, takeProbe } from './circuit.ts';
import { toClaimedJob, type ClaimedJob } from './claimed-job.ts';
import { applyTransition, type Step } from './transitions.ts';

/**
 * Claiming. Two kinds of job are claimable:
 * - a queued job, in its engine's fair order between clients (fair-order.ts): round-robin
 *   across clients, FIFO within one;
 * - a running job whose `run_at` has passed: its worker died (the lease lapsed), handed it back
 *   (shutdown, reroute) or set it aside to retry later. These come first, oldest first.
 *
 * Each claim is one conditional statement (the `claim` transition), so two workers never take the
 * same job: PostgreSQL skips rows another claimer has locked (SKIP LOCKED); SQLite has one writer
 * at a time.
 *
 * A disabled client's queued jobs are not claimed: they wait, as they are, and are claimed in
 * their turn once it is enabled again (a job already running finishes normally). Each claim
 * reads the flag from the database (the few disabled clients, through the clients_disabled
 * index), so a change in the console holds them from the next claim on, in every worker.
 *
 * Limits, counted in the same write transaction as the claim, so they hold across every worker:
 * an engine's concurrency cap (remote engines) and a client's running cap. SQLite's writer lock
 * serialises such transactions by itself; on PostgreSQL each takes transaction-scoped advisory
 * locks first: one per capped engine (in name order), then one for client caps, so two claimers
 * never both count the same free slot and never wait on each other in a cycle.
 */
export interface ClaimOptions {
  workerId: string;
  now: number;
  leaseMs: number;
  /** The engines this worker runs, each with its concurrency cap across all workers (none: uncapped). */
  engines: readonly { engine: string; maxConcurrency?: number }[];
  /** Client running caps: the env default, and whether any client may be capped now (else nothing is counted). */
  clientCaps?: { defaultMaxRunning: number; active: boolean };
  /** Which engine to try first (a worker rotates it, so no engine's queue waits behind another's). */
  turn?: number;
  /** Announces the claim in this process (live status). */
  notifier?: Notifier | null;
}

/** What a claim may take: engines that may start new work, clients that may not. */
interface Gate {
  /** Engines below their cap with a circuit that is not open. */
  open: readonly string[];
  /** Clients that may not start a job now: at their running cap, or disabled. */
  capped: readonly string[];
}

/** Rows of the fair order a claim looks through before it asks each client for its head instead. */
const FAIR_WINDOW = 64;

export async function claimNextJob(handle: DbHandle, opts: ClaimOptions): Promise<ClaimedJob | null> {
  const engines = opts.engines.map((e) => e.engine);
  if (engines.length === 0) return null;
  const capped = opts.engines.filter((e) => e.maxConcurrency !== undefined);
  const clientCaps = opts.clientCaps?.active ? opts.clientCaps : null;
  const notifier = opts.notifier ?? null;
  if (capped.length === 0 && !clientCaps) {
    // Nothing to count: the claim is one transition on its own.
    return transactOne(handle, notifier, async (step) => claimWith(step, opts, engines, { open: engines, capped: await disabledClients(step.tx) }));
  }
  return transact(handle, notifier, async (step) => {
    const { tx } = step;
    if (handle.dialect === 'postgres') {
      // Keyed by schema too: deployments sharing one database never wait on each other.
      for (const { engine } of [...capped].sort((a, b) => (a.engine < b.engine ? -1 : 1))) {
        await sql`select pg_advisory_xact_lock(hashtext(current_schema() || ${`:engine-cap:${engine}`}))`.execute(tx);
      }
      if (clientCaps) await sql`select pg_advisory_xact_lock(hashtext(current_schema() || ':client-cap'))`.execute(tx);
    }
    const { open, halfOpen } = await openEngines(tx, opts, capped);
    const held = [...(clientCaps ? await cappedClients(tx, clientCaps.defaultMaxRunning) : []), ...(await disabledClients(tx))];
    const job = await claimWith(step, opts, engines, { open, capped: held });
    if (job && halfOpen.has(job.engine)) await takeProbe(tx, job.engine, opts.now);
    return job;
  });
}

/**
 * The engines that may start new work: below their cap, circuit not open. A running job whose
 * lease lapsed (its worker died) is counted as busy and keeps its slot: taking it over leaves
 * the count as it is, so it is claimable even at the cap or with the circuit open (it may be
 * polling a task that exists). Otherwise dead workers' jobs could hold every slot forever.
 */
async function openEngines(tx: Tx, opts: ClaimOptions, capped: readonly { engine: string; maxConcurrency?: number }[]): Promise<{ open: string[]; halfOpen: Set<string> }> {
  const uncapped = opts.engines.filter((e) => e.maxConcurrency === undefined).map((e) => e.engine);
  if (capped.length === 0) return { open: uncapped, halfOpen: new Set() };
  const names = capped.map((c) => c.engine);
  const running = await runningCounts(tx, 'engine', names);
  const circuits = await circuitStates(tx, names, opts.now);
  const below = capped.filter((c) => (running.get(c.engine) ?? 0) < (c.maxConcurrency ?? 0) && !circuits.open.has(c.engine)).map((c) => c.engine);
  return { open: [...uncapped, ...below], halfOpen: circuits.halfOpen };
}

/**
 * Jobs running under a lease (what the caps count: one whose lease lapsed keeps its slot until it
 * is taken over) per engine or per client, among `values`.
 */
export async function runningCounts(db: Tx, by: 'engine' | 'client_id', values: readonly string[]): Promise<Map<string, number>> {
  if (values.length === 0) return new Map();
  const rows = await db
    .selectFrom('jobs')
    .select([by, (eb) => eb.fn.countAll<number>().as('running')])
    .where('status', '=', sql.lit('running'))
    .where('lease_owner', 'is not', null)
    .where(by, 'in', values)
    .groupBy(by)
    .execute();
  return new Map(rows.map((r) => [(r as Record<typeof by, string>)[by], Number(r.running)]));
}

/** Clients with as many jobs running (under a lease) as their cap: their own override, else the default. */
async function cappedClients(tx: Tx, defaultMaxRunning: number): Promise<string[]> {
  const cap = sql<number>`coalesce(clients.max_running, ${defaultMaxRunning})`;
  const rows = await tx
    .selectFrom('jobs')
    .leftJoin('clients', 'clients.id', 'jobs.client_id')
    .select('jobs.client_id')
    .where('jobs.status', '=', sql.lit('running'))
    .where('jobs.lease_owner', 'is not', null)
    .groupBy(['jobs.client_id', 'clients.max_running'])
    .having(cap, '>', 0)
    .having((eb) => eb(eb.fn.countAll(), '>=', cap))
    .execute();
  return rows.map((r) => r.client_id);
}

/**
 * Clients disabled in the console now. Their jobs are left out of claims like a capped client's:
 * they can pile up at the head of the fair order, so the same bounded scan applies.
 */
async function disabledClients(db: Tx): Promise<string[]> {
  const rows = await db.selectFrom('clients').select('id').where('disabled', '=', sql.lit(1)).execute();
  return rows.map((r) => r.id);
}

/**
 * One claiming statement over every candidate, first found wins: a due running job, then the
 * head of each open engine's fair order (engines in turn). COALESCE evaluates its subqueries
 * lazily, so an idle engine costs one index probe and a busy one stops the search.
 */
async function claimWith(step: Step, opts: ClaimOptions, engines: readonly string[], gate: Gate): Promise<ClaimedJob | null> {
  const { tx: db, dialect } = step;
  const open = gate.open.map((_, i) => gate.open[(i + (opts.turn ?? 0)) % gate.open.length]!);
  const bounds = new Map<string, number | undefined>();
  if (gate.capped.length > 0) for (const engine of open) bounds.set(engine, await windowEdge(db, engine));
  const candidates = [takeOverPick(db, opts, engines, gate), ...open.map((engine) => queuedPick(db, engine, gate.capped, bounds.get(engine)))];
  const picks = candidates.map((c) => oneLocked(dialect, c));
  // (SQLite's coalesce needs two arguments at least.)
  let row = await claimRow(step, opts, picks.length === 1 ? sql<string>`${picks[0]}` : sql<string>`coalesce(${sql.join(picks)})`);
  // Every bounded window held only capped clients' jobs: ask each other client for its head.
  for (const engine of open) {
    if (row || bounds.get(engine) === undefined) continue;
    const client = await nextUncappedClient(db, engine, gate.capped);
    if (client) row = await claimRow(step, opts, sql<string>`${oneLocked(dialect, queuedPick(db, engine, []).where('client_id', '=', client))}`);
  }
  return row ? toClaimedJob(row) : null;
}

const selectCandidates = (db: Tx) => db.selectFrom('jobs').select('id');
type Candidates = ReturnType<typeof selectCandidates>;

function oneLocked(dialect: DbHandle['dialect'], query: Candidates) {
  const first = query.limit(1);
  return dialect === 'postgres' ? first.forUpdate().skipLocked() : first;
}

/** The claim transition on the row `pick` selects (re-checked: another claimer may have won it). */
async function claimRow(step: Step, opts: ClaimOptions, pick: Expression<string>): Promise<JobsTable | undefined> {
  const [row] = await applyTransition(step, 'claim', { pick }, { workerId: opts.workerId, leaseMs: opts.leaseMs, now: opts.now });
  return row;
}

/** A running job that is due again: a lapsed lease keeps its engine slot; one nobody holds starts anew and needs the gate. */
function takeOverPick(db: Tx, opts: ClaimOptions, engines: readonly string[], gate: Gate): Candidates {
  return selectCandidates(db)
    .where('status', '=', sql.lit('running'))
    .where('run_at', '<=', opts.now)
    .where('engine', 'in', engines)
    .where((eb) => {
      const startsAnew = [eb('lease_owner', 'is', null), gate.open.length > 0 ? eb('engine', 'in', gate.open) : eb.lit(false)];
      if (gate.capped.length > 0) startsAnew.push(eb('client_id', 'not in', gate.capped));
      return eb.or([eb('lease_owner', 'is not', null), eb.and(startsAnew)]);
    })
    .orderBy('run_at');
}

/**
 * The head of an engine's fair order, skipping capped clients. Their jobs can pile up at the
 * head (their turns come but they may not run), so the skipping scan is bounded by `edge`, the
 * key FAIR_WINDOW rows in; past it the claim asks each client for its own head instead.
 */
function queuedPick(db: Tx, engine: string, capped: readonly string[], edge?: number): Candidates {
  let pick = selectCandidates(db).where('status', '=', sql.lit('queued')).where('engine', '=', engine);
  if (capped.length > 0) pick = pick.where('client_id', 'not in', capped);
  if (edge !== undefined) pick = pick.where('fair_key', '<=', edge);
  return pick.orderBy('fair_key');
}

/** The key FAIR_WINDOW rows into an engine's fair order (none: the whole queue is shorter). */
async function windowEdge(db: Tx, engine: string): Promise<number | undefined> {
  const row = await db
    .selectFrom('jobs')
    .select('fair_key')
    .where('status', '=', sql.lit('queued'))
    .where('engine', '=', engine)
    .orderBy('fair_key')
    .offset(FAIR_WINDOW - 1)
    .limit(1)
    .executeTakeFirst();
  return row && Number(row.fair_key);
}

/**
 * The client (not capped) whose first queued job on `engine` comes first in the fair order.
 * The clients are walked through the (engine, client, fair_key) index, one probe per client (a
 * loose index scan), and each one's first queued job through its (client, status, created)
 * index: a client's queued jobs on one engine are in fair order by creation (fair-order.ts).
 */
async function nextUncappedClient(db: Tx, engine: string, capped: readonly string[]): Promise<string | null> {
  const { rows } = await sql<{ client_id: string }>`
    with recursive c(client_id) as (
      select * from (select client_id from jobs where engine = ${engine} order by client_id limit 1) seed
      union all
      select (select client_id from jobs where engine = ${engine} and client_id > c.client_id order by client_id limit 1) from c where c.client_id is not null
    )
    select client_id from (
      select client_id, (select fair_key from jobs where client_id = c.client_id and status = 'queued' and engine = ${engine} order by created_at_us limit 1) as head
      from c where client_id is not null and client_id not in (${sql.join(capped)})
    ) heads where head is not null order by head limit 1`.execute(db);
  return rows[0]?.client_id ?? null;
}

/**
 * Cheap check before claiming, so idle pollers read instead of write. Queued jobs of disabled
 * clients do not count, as far as the first FAIR_WINDOW queued rows tell (past them the claim's
 * own scan decides).
 */
export async function hasClaimableJob(handle: DbHandle, now: number, engines: readonly string[]): Promise<boolean> {
  if (engines.length === 0) return false;
  const { db } = handle;
  const disabled = new Set(await disabledClients(db));
  const queued = await db
    .selectFrom('jobs')
    .select('client_id')
    .where('status', '=', sql.lit('queued'))
    .where('engine', 'in', engines)
    .limit(disabled.size > 0 ? FAIR_WINDOW : 1)
    .execute();
  if (queued.length === FAIR_WINDOW || queued.some((j) => !disabled.has(j.client_id))) return true;
  const due = await db
    .selectFrom('jobs')
    .select('id')
    .where('status', '=', sql.lit('running'))
    .where('run_at', '<=', now)
    .where('engine', 'in', engines)
    .limit(1)
    .executeTakeFirst();
  return due !== undefined;
}
