import { sql } from 'kysely';
import type { DbHandle, Tx, WebhookEndpointsTable } from '../db/index.ts';

/**
 * Receivers are isolated from each other by origin (`scheme://host:port`):
 * - at most `maxInFlight` attempts to one origin at once, across every sender process;
 * - timeouts and connection errors in a row (not HTTP answers: a receiver that answers, even
 *   non-2xx, is alive) block the origin after `failuresToBlock` of them, for `firstBlockMs`
 *   doubling with each further failure up to `maxBlockMs`. A blocked origin gets no attempt;
 *   once the block ends it gets one at a time (a probe) until a 2xx clears the failures.
 * Deliveries an origin cannot take now are held back (`held_due_at` keeps their own due time,
 * `next_attempt_at` moves to when they are looked at again at the latest), so they leave the due
 * range that claims scan: a backlog behind a slow or dead receiver costs the claim nothing.
 * When an attempt ends and its origin has room, that many held deliveries are let go again
 * (earliest first); when the origin is blocked, its held deliveries wait for the block's end.
 */
export interface EndpointPolicy {
  /** Attempts in flight to one origin, across all processes. */
  maxInFlight: number;
  /** Timeouts/connection errors in a row that block an origin. */
  failuresToBlock: number;
  firstBlockMs: number;
  maxBlockMs: number;
}

export const DEFAULT_ENDPOINT_POLICY: EndpointPolicy = { maxInFlight: 2, failuresToBlock: 3, firstBlockMs: 5_000, maxBlockMs: 300_000 };

export type EndpointState = Pick<WebhookEndpointsTable, 'consecutive_failures' | 'blocked_until'>;

/** `scheme://host:port` of a URL, lowercased, the default port spelled out. */
export function originOf(url: string): string {
  try {
    const u = new URL(url);
    const port = u.port || (u.protocol === 'https:' ? '443' : u.protocol === 'http:' ? '80' : '');
    return `${u.protocol}//${u.hostname}:${port}`.toLowerCase();
  } catch {
    return `invalid:${url}`.toLowerCase();
  }
}

/** How long the `failures`-th failure in a row blocks an origin (failures ≥ failuresToBlock). */
function blockMs(policy: EndpointPolicy, failures: number): number {
  const level = Math.max(1, failures - policy.failuresToBlock + 1);
  return Math.min(policy.maxBlockMs, policy.firstBlockMs * 2 ** Math.min(level - 1, 30));
}

/** How many attempts the origin may have in flight now: 0 while blocked, 1 (a probe) after a block until a 2xx. */
export function capOf(policy: EndpointPolicy, state: EndpointState | undefined, now: number): number {
  if (!state || state.consecutive_failures < policy.failuresToBlock) return policy.maxInFlight;
  if (state.blocked_until !== null && Number(state.blocked_until) > now) return 0;
  return Math.min(1, policy.maxInFlight);
}

/**
 * How an attempt went, as far as its origin is concerned: a 2xx (`delivered`), another whole
 * HTTP answer (`answered`: the receiver is alive), or no whole answer in time, or no connection.
 */
export type AttemptResult = 'delivered' | 'answered' | 'unreachable';

/**
 * The origin's state after an attempt ended at `finishedAt` (null: unchanged). A 2xx clears it;
 * another HTTP answer leaves it as it is; a timeout or connection error counts, except one that
 * ends while the origin is blocked (an attempt started before the block: the same outage).
 */
function stateAfter(policy: EndpointPolicy, state: EndpointState | undefined, result: AttemptResult, finishedAt: number): EndpointState | null {
  if (result === 'delivered') return state && (state.consecutive_failures > 0 || state.blocked_until !== null) ? { consecutive_failures: 0, blocked_until: null } : null;
  if (result === 'answered') return null;
  if (state?.blocked_until != null && Number(state.blocked_until) > finishedAt) return null;
  const failures = (state?.consecutive_failures ?? 0) + 1;
  return { consecutive_failures: failures, blocked_until: failures >= policy.failuresToBlock ? finishedAt + blockMs(policy, failures) : null };
}

/**
 * Serialises everything that counts an origin's attempts in flight and acts on the count
 * (claims, recorded outcomes) across processes on PostgreSQL, until the transaction ends. Keyed
 * by schema too: deployments sharing one database never wait on each other. SQLite's one writer
 * (BEGIN IMMEDIATE) does this by itself.
 */
export async function lockDeliveryCounts(handle: DbHandle, tx: Tx): Promise<void> {
  if (handle.dialect === 'postgres') await sql`select pg_advisory_xact_lock(hashtext(current_schema() || ':webhook-claims'))`.execute(tx);
}

export async function endpointStates(tx: Tx, origins: readonly string[]): Promise<Map<string, EndpointState>> {
  if (origins.length === 0) return new Map();
  const rows = await tx.selectFrom('webhook_endpoints').select(['origin', 'consecutive_failures', 'blocked_until']).where('origin', 'in', origins).execute();
  return new Map(rows.map((r) => [r.origin, { consecutive_failures: Number(r.consecutive_failures), blocked_until: r.blocked_until === null ? null : Number(r.blocked_until) }]));
}

/** Claimed deliveries whose lease has not lapsed: per origin how many and the earliest lease end, per client how many. */
export interface InFlight {
  byOrigin: Map<string, { count: number; earliestLeaseEnd: number }>;
  byClient: Map<string, number>;
}

/** Reads the attempts in flight (few rows: at most every sender's pool, plus lapsed claims), optionally of one origin. */
export async function inFlight(tx: Tx, now: number, origin?: string): Promise<InFlight> {
  // Only `lease_owner is not null` (webhook_deliveries_leased): a condition on next_attempt_at
  // could lead the planner to the due index, whose future part holds every scheduled retry.
  let query = tx.selectFrom('webhook_deliveries').select(['origin', 'client_id', 'next_attempt_at']).where('lease_owner', 'is not', null);
  if (origin !== undefined) query = query.where('origin', '=', origin);
  const rows = (await query.execute()).filter((r) => Number(r.next_attempt_at) > now);
  const byOrigin = new Map<string, { count: number; earliestLeaseEnd: number }>();
  const byClient = new Map<string, number>();
  for (const row of rows) {
    const end = Number(row.next_attempt_at);
    const o = byOrigin.get(row.origin);
    if (o) {
      o.count++;
      o.earliestLeaseEnd = Math.min(o.earliestLeaseEnd, end);
    } else byOrigin.set(row.origin, { count: 1, earliestLeaseEnd: end });
    byClient.set(row.client_id, (byClient.get(row.client_id) ?? 0) + 1);
  }
  return { byOrigin, byClient };
}

/** Most due rows held back by one statement (the rest are held by the next claim that meets them). */
const HOLD_BATCH = 1_000;

/**
 * Holds the due deliveries of each origin back until its time at the latest (one statement for
 * them all). A due row with a lease is a lapsed claim (its sender died): the claim is dropped
 * with it, as a takeover would.
 */
export async function holdDue(tx: Tx, until: ReadonlyMap<string, number>, now: number): Promise<void> {
  if (until.size === 0) return;
  const origins = [...until.keys()];
  const batch = tx.selectFrom('webhook_deliveries').select('id').where('origin', 'in', origins).where('next_attempt_at', '<=', now).limit(HOLD_BATCH);
  await tx
    .updateTable('webhook_deliveries')
    .set((eb) => ({
      held_due_at: eb.fn.coalesce('held_due_at', 'next_attempt_at'),
      next_attempt_at: sql<number>`case origin ${sql.join(
        [...until].map(([origin, at]) => sql`when ${origin} then ${at}`),
        sql` `,
      )} else next_attempt_at end`,
      lease_owner: null,
    }))
    .where('id', 'in', batch)
    .where('next_attempt_at', '<=', now)
    .execute();
}

/**
 * Called in the transaction that records an attempt's outcome (under lockDeliveryCounts): updates
 * the origin's failures and block, then either lets as many held deliveries go as the origin
 * has room for, or, when this outcome blocked it, makes its held ones wait for the block's end.
 */
export async function afterAttempt(tx: Tx, policy: EndpointPolicy, origin: string, result: AttemptResult, finishedAt: number, now: number): Promise<void> {
  const before = (await endpointStates(tx, [origin])).get(origin);
  const after = stateAfter(policy, before, result, finishedAt);
  if (after) {
    await tx
      .insertInto('webhook_endpoints')
      .values({ origin, ...after, updated_at: now })
      .onConflict((oc) => oc.column('origin').doUpdateSet({ ...after, updated_at: now }))
      .execute();
  }
  const state = after ?? before;
  const cap = capOf(policy, state, now);
  if (cap === 0) {
    if (after?.blocked_until != null) {
      await tx.updateTable('webhook_deliveries').set({ next_attempt_at: after.blocked_until }).where('origin', '=', origin).where('held_due_at', 'is not', null).execute();
    }
    return;
  }
  const busy = (await inFlight(tx, now, origin)).byOrigin.get(origin)?.count ?? 0;
  if (cap - busy <= 0) return;
  const next = tx
    .selectFrom('webhook_deliveries')
    .select('id')
    .where('origin', '=', origin)
    .where('held_due_at', 'is not', null)
    .orderBy('held_due_at')
    .limit(cap - busy);
  await tx
    .updateTable('webhook_deliveries')
    .set((eb) => ({ next_attempt_at: eb.ref('held_due_at'), held_due_at: null }))
    .where('id', 'in', next)
    .execute();
}
