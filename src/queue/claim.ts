import { sql } from 'kysely';
import { withTransaction, type DbHandle, type Tx } from '../db/index.ts';
import { circuitStates, takeProbe } from './circuit.ts';
import { toClaimedJob, type ClaimedJob } from './claimed-job.ts';
import { TRANSITIONS } from './transitions.ts';

/**
 * Claiming. A job is claimable while `run_at <= now`: from creation while queued, and again
 * once a running job's lease (run_at = lease expiry) lapses because its worker died, or its
 * worker handed it back. Claiming is one conditional statement, so two workers never take the
 * same job: PostgreSQL skips rows another claimer has locked (SKIP LOCKED); SQLite has one
 * writer at a time, which already makes the statement atomic.
 */
export async function claimNextJob(handle: DbHandle, opts: { workerId: string; now: number; leaseMs: number; engines?: readonly string[] }): Promise<ClaimedJob | null> {
  return claimWith(handle.db, handle.dialect, opts);
}

async function claimWith(
  db: Tx,
  dialect: DbHandle['dialect'],
  opts: {
    workerId: string;
    now: number;
    leaseMs: number;
    engines?: readonly string[];
    /** Engines below their cap: only these may start a queued job (a takeover of a running one needs no free slot). */
    openEngines?: readonly string[];
  },
): Promise<ClaimedJob | null> {
  const { engines, openEngines, now } = opts;
  if (engines?.length === 0) return null;
  let next = db.selectFrom('jobs').select('id').where('run_at', '<=', now);
  if (engines) next = next.where('engine', 'in', engines);
  if (openEngines) {
    const open = openEngines;
    next = next.where((eb) => {
      // Counted as busy already: running under a (lapsed) lease. A job handed back (lease_owner null) is not.
      const holdsSlot = eb.and([eb('status', '=', 'running'), eb('lease_owner', 'is not', null)]);
      return open.length > 0 ? eb.or([holdsSlot, eb('engine', 'in', open)]) : holdsSlot;
    });
  }
  next = next.orderBy('run_at').limit(1);
  if (dialect === 'postgres') next = next.forUpdate().skipLocked();
  const row = await db
    .updateTable('jobs')
    .set((eb) => ({
      status: 'running',
      lease_owner: opts.workerId,
      run_at: now + opts.leaseMs,
      attempts: eb('attempts', '+', 1),
      started_at: eb.fn.coalesce('started_at', eb.val(now)),
      progress: eb.fn.coalesce('progress', eb.val(0)),
      updated_at: now,
    }))
    .where('id', '=', next)
    .where('run_at', '<=', now)
    .where('status', 'in', TRANSITIONS.claim.from)
    .returningAll()
    .executeTakeFirst();
  return row ? toClaimedJob(row) : null;
}

/**
 * Claims a job for a remote engine that is below its concurrency cap. The cap holds across
 * every worker because the count and the claim run in one write transaction: the database is
 * the shared truth. SQLite's writer lock serialises such transactions by itself; PostgreSQL's
 * read committed would let two of them count the same free slot, so each first takes a
 * transaction-scoped advisory lock per engine (in name order: no deadlock between workers with
 * different engine sets). Claims for local engines never take these locks.
 */
export async function claimNextRemoteJob(
  handle: DbHandle,
  opts: { workerId: string; now: number; leaseMs: number; caps: readonly { engine: string; maxConcurrency: number }[] },
): Promise<ClaimedJob | null> {
  const engines = opts.caps.map((c) => c.engine);
  if (engines.length === 0 || !(await hasClaimableJob(handle, opts.now, engines))) return null;
  return withTransaction(handle, async (tx) => {
    if (handle.dialect === 'postgres') {
      for (const engine of [...engines].sort()) {
        // Keyed by schema too: deployments sharing one database never wait on each other.
        await sql`select pg_advisory_xact_lock(hashtext(current_schema() || ${`:engine-cap:${engine}`}))`.execute(tx);
      }
    }
    const busy = await tx
      .selectFrom('jobs')
      .select(['engine', (eb) => eb.fn.countAll<number>().as('running')])
      .where('status', '=', 'running')
      .where('lease_owner', 'is not', null)
      .where('engine', 'in', engines)
      .groupBy('engine')
      .execute();
    const running = new Map(busy.map((b) => [b.engine, Number(b.running)]));
    // New work goes only to engines below their cap whose circuit is not open. A running job
    // whose lease lapsed (its worker died) is counted above and keeps its slot: taking it over
    // leaves the count as it is, so it is claimable even at the cap or with the circuit open
    // (it may be polling a task that exists). Otherwise dead workers' jobs could hold every
    // slot of an engine forever.
    const circuits = await circuitStates(tx, engines, opts.now);
    const openEngines = opts.caps.filter((c) => (running.get(c.engine) ?? 0) < c.maxConcurrency && !circuits.open.has(c.engine)).map((c) => c.engine);
    const job = await claimWith(tx, handle.dialect, { ...opts, engines, openEngines });
    if (job && circuits.halfOpen.has(job.engine)) await takeProbe(tx, job.engine, opts.now);
    return job;
  });
}

/** Cheap check before claiming, so idle pollers read instead of write. */
export async function hasClaimableJob(handle: DbHandle, now: number, engines?: readonly string[]): Promise<boolean> {
  if (engines?.length === 0) return false;
  let query = handle.db.selectFrom('jobs').select('id').where('run_at', '<=', now);
  if (engines) query = query.where('engine', 'in', engines);
  const row = await query.limit(1).executeTakeFirst();
  return row !== undefined;
}
