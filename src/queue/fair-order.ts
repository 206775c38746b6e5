import { sql } from 'kysely';
import type { Tx } from '../db/index.ts';

/**
 * The fair order of queued jobs (start-time fair queuing). Each engine's queued jobs are
 * claimed in `fair_key` order, and a new job's key is set when it is queued:
 *
 *   key = (the client's last queued key on that engine, or, when it has none, the head of the
 *          engine's queue) + FAIR_STRIDE / weight
 *
 * So a client's jobs stay FIFO among themselves, each further job of a client with a backlog
 * goes one round later, and a client with nothing queued goes right after the head: with
 * clients A (1,000 jobs queued) and B (one job), B's job is the second one claimed, whatever A
 * queued before. Clients with a backlog alternate (weight 2 gets two turns per round). Nothing
 * is stored per client and nothing is written when a job is claimed: the order lives in one
 * indexed column, so the claim stays one index lookup, and a client that was idle earns no
 * credit (its next key starts from the head again).
 */
export const FAIR_STRIDE = 1_000_000;
/** Largest per-client weight: a weight-1,000 client's stride is still 1,000 key units. */
export const MAX_WEIGHT = 1000;

/** The key for a new queued job of `clientId` on `engine`. */
export async function nextFairKey(tx: Tx, input: { engine: string; clientId: string; weight: number }): Promise<number> {
  // Literal `status = 'queued'` (not a parameter): the partial indexes apply on both databases.
  const { rows } = await sql<{ own: number | string | null; head: number | string | null }>`
    select
      (select max(fair_key) from jobs where status = 'queued' and engine = ${input.engine} and client_id = ${input.clientId}) as own,
      (select min(fair_key) from jobs where status = 'queued' and engine = ${input.engine}) as head`.execute(tx);
  const base = rows[0]?.own ?? rows[0]?.head ?? 0;
  return Number(base) + strideOf(input.weight);
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
