import { sql } from 'kysely';
import type { Tx } from '../db/index.ts';
import { applyTransition, type Step } from './transitions.ts';

/**
 * The fair order of queued jobs: start-time fair queuing (Goyal et al., 1996), per engine.
 * Each engine's queued jobs are claimed in `fair_key` order; a new job's key is set once, when
 * it is queued:
 *
 *   key = max(V, min(last + stride, tail + stride))      stride = FAIR_STRIDE / weight
 *
 * - `V`, the engine's virtual time: the highest key among its running jobs (claims take the
 *   lowest queued key, so that is the newest claim), or with none running the head of its
 *   queue; a job keyed V goes next.
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
 * Keys for the jobs queued in one transaction (a group commit's batch). The first job of each
 * (engine, client) looks up V, last and tail; later ones of the batch follow from what this
 * batch already assigned, without a statement. Statuses are literals, not parameters, so that
 * the partial indexes apply on both databases; each lookup is `ORDER BY … LIMIT 1` on an index
 * in that order (not min/max), which PostgreSQL plans as one index probe even with stale
 * statistics (a young table being flooded). With a backlog `last <= tail`: FIFO per client.
 */
export function fairKeys(tx: Tx) {
  type Lane = { v: number; last: number | null; tail: number | null };
  const lanes = new Map<string, Map<string, Lane>>();
  return {
    async next(engine: string, clientId: string, weight: number): Promise<number> {
      const clients = lanes.get(engine) ?? new Map<string, Lane>();
      lanes.set(engine, clients);
      // The transaction sees its own inserts, so a lookup counts this batch's earlier jobs too.
      const lane = clients.get(clientId) ?? (await lookUp(tx, engine, clientId));
      clients.set(clientId, lane);
      const key = lane.last === null ? lane.v : Math.max(lane.v, Math.min(lane.last, lane.tail ?? lane.last) + strideOf(weight));
      // From here on the client has a backlog ending at `key`: tail no longer matters to it.
      lane.last = key;
      lane.tail = Math.max(lane.tail ?? key, key);
      return key;
    },
  };
}

async function lookUp(tx: Tx, engine: string, clientId: string) {
  const { rows } = await sql<Record<'v' | 'last' | 'tail', number | string | null>>`
    select
      coalesce(
        (select fair_key from jobs where status = 'running' and engine = ${engine} order by fair_key desc limit 1),
        (select fair_key from jobs where status = 'queued' and engine = ${engine} order by fair_key limit 1)) as v,
      (select fair_key from jobs where engine = ${engine} and client_id = ${clientId} order by fair_key desc limit 1) as last,
      (select fair_key from jobs where status = 'queued' and engine = ${engine} order by fair_key desc limit 1) as tail`.execute(tx);
  const num = (x: number | string | null | undefined) => (x === null || x === undefined ? null : Number(x));
  return { v: num(rows[0]?.v) ?? 0, last: num(rows[0]?.last), tail: num(rows[0]?.tail) };
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
      (select fair_key from jobs where status = 'queued' and engine = ${from} order by fair_key limit 1) as src,
      (select fair_key from jobs where status = 'queued' and engine = ${to} order by fair_key limit 1) as dst`.execute(tx);
  const { src, dst } = rows[0] ?? { src: null, dst: null };
  return src === null || dst === null ? 0 : Number(dst) - Number(src);
}

/**
 * Puts a client's queued jobs back into the fair order after they waited outside it (the client
 * was disabled: claims skip its jobs, and the order moves on without them). On each engine its
 * first queued job gets the engine's virtual time V (it goes next), the others keep their spacing
 * after it, so they take turns with other clients' jobs again. Left as they were, their keys
 * would lie far below V and the whole backlog would be claimed ahead of every other client.
 * Call it in the transaction that enables the client (a step of it: the `resumeTurns` transition).
 */
export async function fairKeysResume(step: Step, clientId: string): Promise<void> {
  const { tx } = step;
  const engines = await tx.selectFrom('jobs').select('engine').distinct().where('client_id', '=', clientId).where('status', '=', sql.lit('queued')).execute();
  for (const { engine } of engines) {
    const { rows } = await sql<Record<'v' | 'head', number | string | null>>`
      select
        coalesce(
          (select fair_key from jobs where status = 'running' and engine = ${engine} order by fair_key desc limit 1),
          (select fair_key from jobs where status = 'queued' and engine = ${engine} and client_id <> ${clientId} order by fair_key limit 1)) as v,
        (select fair_key from jobs where status = 'queued' and engine = ${engine} and client_id = ${clientId} order by fair_key limit 1) as head`.execute(tx);
    const v = rows[0]?.v;
    const head = rows[0]?.head;
    if (v === null || v === undefined || head === null || head === undefined || Number(head) >= Number(v)) continue;
    await applyTransition(step, 'resumeTurns', { engine, clientId }, { shift: Number(v) - Number(head), now: 0 });
  }
}
