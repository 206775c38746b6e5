import { sql } from 'kysely';
import type { DbHandle, Tx, WebhookEndpointsTable } from '../db/index.ts';
import { deferHeld, releaseHeld } from './delivery-rows.ts';

/**
 * Receivers are isolated from each other by origin (`scheme://host:port`), and clients from each
 * other at one origin (a receiver many clients send to, or two clients' paths on one host):
 * - an origin's capacity, `maxInFlight` attempts at once across every sender process, is divided
 *   between the clients with deliveries to it (in flight, or held back waiting for it): each
 *   may have its fair part, maxInFlight / clients (rounded down, at least 1), in flight there; a
 *   client alone may use all of it. Every client may always have one attempt in flight at an
 *   origin: an attempt cannot be taken back, so without that, a client whose requests hang there
 *   (claimed while it was alone) would hold up every other client's events until they time out.
 *   So an origin has at most max(maxInFlight, clients) attempts in flight once those claimed
 *   beyond a fair part have ended; slots above a client's fair part are not refilled while others wait.
 * - timeouts and connection errors in a row (not HTTP answers: a receiver that answers, even
 *   non-2xx, is alive) block one client's deliveries to the origin (`webhook_endpoints`, keyed by
 *   client and origin) after `failuresToBlock` of them, for `firstBlockMs` doubling with each
 *   further failure up to `maxBlockMs`. A blocked client gets no attempt there; once the block
 *   ends it gets one at a time (a probe) until a 2xx clears the failures. Keyed by client, not
 *   path: one client's dead path never blocks another's, and a client cannot escape its backoff
 *   by giving each job its own path (`/hook/<job id>`): a dead host is one dead host to it.
 * Deliveries a client cannot send to an origin now are held back (`held_due_at` keeps their own
 * due time, `next_attempt_at` moves to when they are looked at again at the latest), so they leave
 * the due range that claims scan: a backlog behind a slow or dead receiver costs the claim nothing.
 * When an attempt ends, as many held deliveries of each client as it has room for are let go
 * again (earliest first); a client blocked there keeps its held deliveries until the block ends.
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

/** How many attempts a client may have in flight at an origin by its failures there: 0 while blocked, 1 (a probe) after a block until a 2xx. */
export function capOf(policy: EndpointPolicy, state: EndpointState | undefined, now: number): number {
  if (!state || state.consecutive_failures < policy.failuresToBlock) return policy.maxInFlight;
  if (state.blocked_until !== null && Number(state.blocked_until) > now) return 0;
  return Math.min(1, policy.maxInFlight);
}

/** A client's fair part of an origin's capacity when `clients` clients have deliveries to it. */
function fairPart(policy: EndpointPolicy, clients: number): number {
  return Math.max(1, Math.floor(policy.maxInFlight / Math.max(1, clients)));
}

/**
 * How many more attempts `clientId` may start at an origin with `load` in flight, `clients`
 * clients having deliveries to it and `laneCap` its own cap there (capOf). Attempts a client has
 * beyond its fair part (claimed while it had the origin to itself) do not count against the
 * others: they end and are not refilled while others wait. A client with nothing in flight there
 * may always start one.
 */
function roomAt(policy: EndpointPolicy, load: OriginLoad | undefined, clientId: string, laneCap: number, clients: number): number {
  const mine = load?.byClient.get(clientId) ?? 0;
  const limit = Math.min(fairPart(policy, clients), laneCap);
  if (mine >= limit) return 0;
  let counted = 0;
  for (const n of load?.byClient.values() ?? []) counted += Math.min(n, fairPart(policy, clients));
  return Math.max(mine === 0 ? 1 : 0, Math.min(limit - mine, policy.maxInFlight - counted));
}

/**
 * roomAt for a claim: how many clients share the origin is only looked up when it matters (the
 * client already has an attempt there, and fewer clients than the capacity are in flight).
 */
export async function roomFor(tx: Tx, policy: EndpointPolicy, load: OriginLoad | undefined, clientId: string, origin: string, laneCap: number, now: number): Promise<number> {
  if (laneCap === 0) return 0;
  const present = new Set(load?.byClient.keys());
  present.add(clientId);
  if ((load?.byClient.get(clientId) ?? 0) > 0 && present.size < policy.maxInFlight) for (const id of await waitingClients(tx, origin, now)) present.add(id);
  return roomAt(policy, load, clientId, laneCap, present.size);
}

/**
 * How an attempt went, as far as its origin is concerned: a 2xx (`delivered`), another whole
 * HTTP answer (`answered`: the receiver is alive), no whole answer in time or no connection
 * (`unreachable`), or a target the URL guard refused (`refused`: nothing was sent, so nothing
 * was learned about the receiver). A Retry-After is not an origin-wide signal here: it settles
 * only its own delivery (schedule.ts settleAttempt); the origin's limits still apply to the others.
 */
export type AttemptResult = 'delivered' | 'answered' | 'unreachable' | 'refused';

/**
 * The origin's state after an attempt ended at `finishedAt` (null: unchanged). A 2xx clears it;
 * another HTTP answer, or a refused target, leaves it as it is; a timeout or connection error
 * counts, except one that ends while the origin is blocked (an attempt started before the block:
 * the same outage).
 */
function stateAfter(policy: EndpointPolicy, state: EndpointState | undefined, result: AttemptResult, finishedAt: number): EndpointState | null {
  if (result === 'delivered') return state && (state.consecutive_failures > 0 || state.blocked_until !== null) ? { consecutive_failures: 0, blocked_until: null } : null;
  if (result === 'answered' || result === 'refused') return null;
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

/** The failure state of `clientId`'s deliveries to each of `origins`. */
export async function endpointStates(tx: Tx, clientId: string, origins: readonly string[]): Promise<Map<string, EndpointState>> {
  if (origins.length === 0) return new Map();
  const rows = await tx
    .selectFrom('webhook_endpoints')
    .select(['origin', 'consecutive_failures', 'blocked_until'])
    .where('client_id', '=', clientId)
    .where('origin', 'in', origins)
    .execute();
  return new Map(rows.map((r) => [r.origin, { consecutive_failures: Number(r.consecutive_failures), blocked_until: r.blocked_until === null ? null : Number(r.blocked_until) }]));
}

/**
 * Clients with deliveries held back for `origin` that could be sent now but for its capacity:
 * not blocked there, not disabled. One index probe per client (a loose scan of
 * webhook_deliveries_origin_client_held), never their rows.
 */
async function waitingClients(tx: Tx, origin: string, now: number): Promise<string[]> {
  const { rows } = await sql<{ client_id: string }>`
    with recursive c(client_id) as (
      select * from (select client_id from webhook_deliveries where origin = ${origin} and held_due_at is not null order by client_id limit 1) seed
      union all
      select (select client_id from webhook_deliveries where origin = ${origin} and held_due_at is not null and client_id > c.client_id order by client_id limit 1) from c where c.client_id is not null
    )
    select client_id from c
    where client_id is not null
      and client_id not in (select id from clients where disabled = 1)
      and not exists (select 1 from webhook_endpoints e where e.client_id = c.client_id and e.origin = ${origin} and e.blocked_until > ${now})`.execute(tx);
  return rows.map((r) => r.client_id);
}

/**
 * When a claim counts as an attempt in flight. A live sender renews its lease every heartbeat
 * (a sixth of it by default), so a claim not renewed for `staleAfterMs` has lost its sender
 * (killed, or stalled that long): it no longer counts against its client's part of the origin or
 * the origin's capacity, though nobody may send it again until its lease lapses. Without this,
 * one killed sender took its client's whole part of an origin (one attempt, with two clients
 * there) for the rest of its lease: that client sent nothing there meanwhile, and with senders
 * killed every few seconds its deliveries fell minutes behind while the origin stood idle.
 */
export interface Liveness {
  leaseMs: number;
  staleAfterMs: number;
}

/** One origin's attempts in flight: how many, when the earliest stops counting (ends, or its sender is presumed dead), how many per client. */
export interface OriginLoad {
  count: number;
  earliestRelease: number;
  byClient: Map<string, number>;
}

/** Claims that count as in flight (Liveness): per origin (OriginLoad), per client how many. */
export interface InFlight {
  byOrigin: Map<string, OriginLoad>;
  byClient: Map<string, number>;
}

/** Reads the attempts in flight (few rows: at most every sender's pool, plus lapsed claims), optionally of one origin. */
export async function inFlight(tx: Tx, now: number, liveness: Liveness, origin?: string): Promise<InFlight> {
  // Only `lease_owner is not null` (webhook_deliveries_leased): a condition on next_attempt_at
  // could lead the planner to the due index, whose future part holds every scheduled retry.
  let query = tx.selectFrom('webhook_deliveries').select(['origin', 'client_id', 'next_attempt_at']).where('lease_owner', 'is not', null);
  if (origin !== undefined) query = query.where('origin', '=', origin);
  // A lease ends leaseMs after its last renewal: renewed within staleAfterMs, it ends after this.
  const shift = liveness.leaseMs - Math.min(liveness.staleAfterMs, liveness.leaseMs);
  const rows = (await query.execute()).filter((r) => Number(r.next_attempt_at) - shift > now);
  const byOrigin = new Map<string, OriginLoad>();
  const byClient = new Map<string, number>();
  for (const row of rows) {
    const release = Number(row.next_attempt_at) - shift;
    const o = byOrigin.get(row.origin) ?? { count: 0, earliestRelease: release, byClient: new Map<string, number>() };
    byOrigin.set(row.origin, o);
    o.count++;
    o.earliestRelease = Math.min(o.earliestRelease, release);
    o.byClient.set(row.client_id, (o.byClient.get(row.client_id) ?? 0) + 1);
    byClient.set(row.client_id, (byClient.get(row.client_id) ?? 0) + 1);
  }
  return { byOrigin, byClient };
}

/**
 * Called in the transaction that records an attempt's outcome (under lockDeliveryCounts): updates
 * the failures and block of the attempt's client at its origin; when this outcome blocked it,
 * its held deliveries there wait for the block's end. Then every client waiting for the origin
 * gets as many held deliveries let go as it has room for now (roomAt), fewest in flight first.
 */
export async function afterAttempt(
  tx: Tx,
  policy: EndpointPolicy,
  liveness: Liveness,
  clientId: string,
  origin: string,
  result: AttemptResult,
  finishedAt: number,
  now: number,
): Promise<void> {
  const before = (await endpointStates(tx, clientId, [origin])).get(origin);
  const after = stateAfter(policy, before, result, finishedAt);
  if (after) {
    await tx
      .insertInto('webhook_endpoints')
      .values({ client_id: clientId, origin, ...after, updated_at: now })
      .onConflict((oc) => oc.columns(['client_id', 'origin']).doUpdateSet({ ...after, updated_at: now }))
      .execute();
    if (capOf(policy, after, now) === 0 && after.blocked_until !== null) {
      await deferHeld(tx, clientId, origin, after.blocked_until);
    }
  }
  const waiting = await waitingClients(tx, origin, now);
  if (waiting.length === 0) return;
  const load = (await inFlight(tx, now, liveness, origin)).byOrigin.get(origin) ?? { count: 0, earliestRelease: now, byClient: new Map<string, number>() };
  const clients = new Set([...load.byClient.keys(), ...waiting]).size;
  const lanes = new Map<string, EndpointState | undefined>();
  for (const id of waiting) lanes.set(id, (await endpointStates(tx, id, [origin])).get(origin));
  for (const id of [...waiting].sort((a, b) => (load.byClient.get(a) ?? 0) - (load.byClient.get(b) ?? 0))) {
    const room = roomAt(policy, load, id, capOf(policy, lanes.get(id), now), clients);
    if (room <= 0) continue;
    const released = await releaseHeld(tx, id, origin, room);
    // Counted as in flight: the next client's room leaves space for them.
    load.byClient.set(id, (load.byClient.get(id) ?? 0) + released);
  }
}
