import { sql } from 'kysely';
import type { Tx } from '../db/index.ts';

/**
 * The fair order of queued jobs: start-time fair queuing (Goyal et al., 1996), per engine.
 * Each engine's queued jobs are claimed in `fair_key` order; a new job's key is set once, when
 * it is queued:
 *
 *   key = max(V, min(last + stride, tail + stride))      stride = FAIR_STRIDE / weight
 *
 * - `V`, the engine's virtual time: the highest key among its running jobs (the ones most
 *   recently claimed), or with none running the head of its queue; a job keyed V goes next.
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
export const MAX_WEIGHT = 1000;

/** The key for a new queued job of `clientId` on `engine`. */
export async function nextFairKey(tx: Tx, input: { engine: string; clientId: string; weight: number }): Promise<number> {
  const { engine, clientId } = input;
  // Literal statuses (not parameters), so that the partial indexes apply on both databases.
  const { rows } = await sql<Record<'v' | 'head' | 'queued' | 'last' | 'tail', number | string | null>>`
    select
      (select max(fair_key) from jobs where status = 'running' and engine = ${engine}) as v,
      (select min(fair_key) from jobs where status = 'queued' and engine = ${engine}) as head,
      (select fair_key from jobs where client_id = ${clientId} and status = 'queued' and engine = ${engine} order by created_at_us desc limit 1) as queued,
      (select max(fair_key) from jobs where engine = ${engine} and client_id = ${clientId}) as last,
      (select max(fair_key) from jobs where status = 'queued' and engine = ${engine}) as tail`.execute(tx);
  const num = (x: number | string | null | undefined) => (x === null || x === undefined ? null : Number(x));
  const [v, head, queued, last, tail] = (['v', 'head', 'queued', 'last', 'tail'] as const).map((k) => num(rows[0]?.[k]));
  const stride = strideOf(input.weight);
  // A backlog goes on FIFO, one round per job.
  if (queued !== null) return queued + stride;
  const vt = v ?? head ?? 0;
  if (last === null) return vt;
  return Math.max(vt, Math.min(last, tail ?? last) + stride);
}

export function strideOf(weight: number): number {
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
