import { sql } from 'kysely';
import type { DbHandle, Tx } from '../db/index.ts';

/**
 * The fair order of queued jobs: start-time fair queuing (Goyal et al., 1996), per engine.
 * Each engine's queued jobs are claimed in `fair_key` order; a new job's key is set once, when
 * it is queued:
 *
 *   key = max(V, min(last + stride, tail + stride))      stride = FAIR_STRIDE / weight
 *
 * - `V`, the engine's virtual time: the key of its newest running job (the newest claim), or
 *   with none running the head of its queue; a job keyed V goes next.
 * - `last`: the client's last key on that engine (any status): a client's jobs stay FIFO, and
 *   each further job of a client goes one stride (one round) after its previous one, so clients
 *   with a backlog take turns (weight 2: two turns per round) and a client that keeps
 *   resubmitting pays for the turns it had.
 * - A client that has had nothing for a while gets key V: its job is the next one claimed,
 *   whatever others have queued. It earns no credit by idling (never below V).
 * - `tail`, the engine's highest queued key: nobody's next job goes further than one round
 *   behind everything queued (a client that cancelled a large backlog is not punished for it).
 *
 * Nothing is written when a job is claimed and no per-client state is kept beyond the jobs: the
 * order lives in one indexed column, so the claim stays one index lookup.
 */
export const FAIR_STRIDE = 1_000_000;
/** Largest per-client weight: a weight-1,000 client's stride is still 1,000 key units. */
const MAX_WEIGHT = 1000;

/**
 * The key for a new queued job of `clientId` on `engine`, as an expression for the job's own
 * INSERT (no extra round trip). Statuses are literals, not parameters, so that the partial
 * indexes apply on both databases. The newest running job holds the highest running key, since
 * a claim takes the lowest queued one. With a backlog `last <= tail`: the client stays FIFO.
 */
export function fairKeyFor(dialect: DbHandle['dialect'], input: { engine: string; clientId: string; weight: number }) {
  const { engine, clientId } = input;
  // SQLite's scalar max/min are PostgreSQL's greatest/least (which would skip a null: none is passed).
  const [max, min] = dialect === 'postgres' ? [sql.raw('greatest'), sql.raw('least')] : [sql.raw('max'), sql.raw('min')];
  return sql<number>`(
    select case when last is null then coalesce(v, 0) else ${max}(coalesce(v, 0), ${min}(last, coalesce(tail, last)) + ${strideOf(input.weight)}) end
    from (select
      coalesce(
        (select fair_key from jobs where status = 'running' and engine = ${engine} order by started_at desc limit 1),
        (select min(fair_key) from jobs where status = 'queued' and engine = ${engine})) as v,
      (select max(fair_key) from jobs where engine = ${engine} and client_id = ${clientId}) as last,
      (select max(fair_key) from jobs where status = 'queued' and engine = ${engine}) as tail) fair)`;
}

function strideOf(weight: number): number {
  return Math.round(FAIR_STRIDE / Math.min(MAX_WEIGHT, Math.max(1, weight)));
}

/**
 * Where the jobs moved from one engine's queue to another's go in the new order: the same
 * distance from its head as they were from the old one (a plain copy of their keys could put
 * them behind every job queued there, or ahead of all of them).
 */
export async function fairKeyShift(tx: Tx, from: string, to: string): Promise<number> {
  const { rows } = await sql<{ src: number | string | null; dst: number | string | null }>`
    select
      (select min(fair_key) from jobs where status = 'queued' and engine = ${from}) as src,
      (select min(fair_key) from jobs where status = 'queued' and engine = ${to}) as dst`.execute(tx);
  const { src, dst } = rows[0] ?? { src: null, dst: null };
  return src === null || dst === null ? 0 : Number(dst) - Number(src);
}
