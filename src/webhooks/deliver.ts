import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { checkUrl, FetchError, guardedDispatcher } from '../net/index.ts';
import { sql } from 'kysely';
import type { DbHandle, WebhookDeliveriesTable } from '../db/index.ts';
import { withTransaction } from '../db/index.ts';
import { ERR } from '../lib/error-codes.ts';
import { storableText } from '../lib/storable-text.ts';
import { outageBackoffMs } from '../lib/retry-ladders.ts';
import type { Clock } from '../lib/clock.ts';
import { signatureHeaders } from './sign.ts';
import { claimIfDue, holdBackDue, renewClaim, settleClaim } from './delivery-rows.ts';
import {
  afterAttempt,
  capOf,
  DEFAULT_ENDPOINT_POLICY,
  type EndpointPolicy,
  type EndpointState,
  endpointStates,
  inFlight,
  type Liveness,
  lockDeliveryCounts,
  roomFor,
} from './endpoints.ts';
import { settleAttempt } from './schedule.ts';
import type { ClientShare } from './share.ts';

export interface DeliveryOptions {
  handle: DbHandle;
  clock: Clock;
  /** Who holds a claimed delivery (worker id). */
  owner: string;
  /** ZHINIAN_WEBHOOK_SECRET: signs the deliveries of clients without a secret of their own. */
  secret: string | null;
  /** A client's own secrets (console), newest first; empty: `secret`. */
  clientSecrets?: (clientId: string) => Promise<string[]>;
  allowPrivateUrls: boolean;
  /** The receiver's whole answer must come within this (contract: 10 s). */
  timeoutMs?: number;
  /** A claimed delivery whose sender stops renewing it becomes due again after this (default 30 s). */
  leaseMs?: number;
  /** How often an attempt in flight renews its claim (real time; default a sixth of the lease). */
  heartbeatMs?: number;
  /** Told about database trouble that an attempt survives (a failed renewal, a retried record). */
  onWarning?: (message: string, details: Record<string, unknown>) => void;
  /** Per-origin limits and backoff (default DEFAULT_ENDPOINT_POLICY); the same in every process. */
  endpoints?: Partial<EndpointPolicy>;
}

export type AttemptOutcome = 'delivered' | 'retry' | 'failed' | 'lost';

const DEFAULT_TIMEOUT_MS = 10_000;
/**
 * How long a claim holds without renewal. An attempt renews it every sixth of this while it is
 * in flight (sending, then recording the answer), so it lapses only when its process dies or
 * stalls for most of this: only then does another process send the event again.
 */
export const DEFAULT_DELIVERY_LEASE_MS = 30_000;

/** Due rows of one client a claim pass reads at a time, and at most per client per pass. */
const CLAIM_WINDOW = 64;
const CLAIM_ROWS_PER_CLIENT = 4 * CLAIM_WINDOW;
/** Passes (one transaction each) a claim makes while they hold rows back and claim nothing. */
const CLAIM_PASSES = 8;

/**
 * Claims the next due delivery under a lease: its next_attempt_at moves a lease ahead and
 * lease_owner names this process. The attempt renews the lease until its outcome is recorded,
 * so another process only sends it again if this one dies (or stalls past the lease). The claim
 * is a conditional update, so two processes never send the same attempt.
 *
 * Which one (webhooks/endpoints.ts, share.ts): clients with due deliveries are found one index
 * probe each (disabled clients are left out: their deliveries wait, untried, until the client is
 * enabled again), those this pool may not take more of are skipped, and the one with the fewest
 * attempts in flight (across all processes) goes first, then the one waiting longest. Its due
 * rows are read earliest first, a window at a time; the first whose origin has room for this
 * client (its fair part of the origin, not blocked for it) is claimed. Rows the client cannot
 * send to their origin now are held back on the way, so they leave the due range: a later claim,
 * or an idle poll (which only reads), never meets them again until there is room. Other clients'
 * rows to the same origin stay due. Each pass reads a bounded number of rows per client, then
 * tries the next client, so a backlog behind blocked receivers is cleared over a few passes while
 * other clients are served in the first. The count and the claim are one transaction under
 * lockDeliveryCounts.
 */
export async function claimDueDelivery(opts: DeliveryOptions, share?: ClientShare): Promise<WebhookDeliveriesTable | null> {
  for (let pass = 0; pass < CLAIM_PASSES; pass++) {
    const { claimed, held } = await claimPass(opts, share);
    if (claimed || !held) return claimed;
  }
  return null;
}

async function claimPass(opts: DeliveryOptions, share: ClientShare | undefined): Promise<{ claimed: WebhookDeliveriesTable | null; held: boolean }> {
  const now = opts.clock.now();
  // Read first: idle senders poll, and a read never takes SQLite's write lock.
  const waiting = (await dueClients(opts.handle, now)).filter((c) => share?.mayTake(c.clientId) ?? true);
  if (waiting.length === 0) return { claimed: null, held: false };
  const policy = policyOf(opts);
  return withTransaction(opts.handle, async (tx) => {
    await lockDeliveryCounts(opts.handle, tx);
    const busy = await inFlight(tx, now, livenessOf(opts));
    const order = [...waiting].sort((a, b) => (busy.byClient.get(a.clientId) ?? 0) - (busy.byClient.get(b.clientId) ?? 0) || a.head - b.head);
    let held = false;
    for (const { clientId } of order) {
      const states = new Map<string, EndpointState | undefined>();
      for (let seen = 0; seen < CLAIM_ROWS_PER_CLIENT; ) {
        const rows = await tx
          .selectFrom('webhook_deliveries')
          .select(['id', 'origin'])
          .where('client_id', '=', clientId)
          .where('next_attempt_at', '<=', now)
          .orderBy('next_attempt_at')
          .limit(CLAIM_WINDOW)
          .execute();
        seen += rows.length;
        const unknown = [...new Set(rows.map((r) => r.origin))].filter((o) => !states.has(o));
        const found = await endpointStates(tx, clientId, unknown);
        for (const origin of unknown) states.set(origin, found.get(origin));
        // Origins without room for this client: its rows there are held back until its block
        // ends, or until the origin's earliest attempt in flight would stop counting (its sender
        // stopped renewing it); an attempt at the origin that ends lets them go sooner.
        const hold = new Map<string, number>();
        for (const row of rows) {
          if (hold.has(row.origin)) continue;
          const state = states.get(row.origin);
          const cap = capOf(policy, state, now);
          const load = busy.byOrigin.get(row.origin);
          if ((await roomFor(tx, policy, load, clientId, row.origin, cap, now)) > 0) {
            const claimed = await claimIfDue(tx, row.id, now, opts.owner, now + leaseMsOf(opts));
            if (claimed) {
              await holdBackDue(tx, clientId, hold, now);
              return { claimed, held: held || hold.size > 0 };
            }
            continue;
          }
          hold.set(row.origin, cap === 0 ? Number(state?.blocked_until) : (load?.earliestRelease ?? now + livenessOf(opts).staleAfterMs));
        }
        await holdBackDue(tx, clientId, hold, now);
        held ||= hold.size > 0;
        if (rows.length < CLAIM_WINDOW || hold.size === 0) break;
      }
    }
    return { claimed: null, held };
  });
}

/**
 * The clients with a due delivery and their earliest due time, one index probe per client with
 * any pending delivery (a loose index scan of webhook_deliveries_client_due), never their rows.
 * Disabled clients are left out, by the database's flag as it is now (the console's change
 * holds their deliveries at the next claim in every process).
 */
async function dueClients(handle: DbHandle, now: number): Promise<{ clientId: string; head: number }[]> {
  const { rows } = await sql<{ client_id: string; head: number | string | null }>`
    with recursive c(client_id) as (
      select * from (select client_id from webhook_deliveries where next_attempt_at is not null order by client_id limit 1) seed
      union all
      select (select client_id from webhook_deliveries where next_attempt_at is not null and client_id > c.client_id order by client_id limit 1) from c where c.client_id is not null
    )
    select client_id, (select next_attempt_at from webhook_deliveries where next_attempt_at is not null and client_id = c.client_id order by next_attempt_at limit 1) as head
    from c where client_id is not null and client_id not in (select id from clients where disabled = 1)`.execute(handle.db);
  return rows.map((r) => ({ clientId: r.client_id, head: Number(r.head) })).filter((r) => r.head <= now);
}

const policyOf = (opts: DeliveryOptions): EndpointPolicy => ({ ...DEFAULT_ENDPOINT_POLICY, ...opts.endpoints });

const leaseMsOf = (opts: DeliveryOptions) => opts.leaseMs ?? DEFAULT_DELIVERY_LEASE_MS;

const heartbeatMsOf = (opts: DeliveryOptions) => opts.heartbeatMs ?? Math.max(1, Math.floor(leaseMsOf(opts) / 6));

/** A claim counts as in flight while renewed within two heartbeats (a third of the lease by default): endpoints.ts Liveness. */
const livenessOf = (opts: DeliveryOptions): Liveness => {
  const leaseMs = leaseMsOf(opts);
  return { leaseMs, staleAfterMs: Math.min(leaseMs, Math.max(Math.floor(leaseMs / 3), 2 * heartbeatMsOf(opts))) };
};

interface Lease {
  /** Until when the claim is known to be ours (the last renewal that reached the database). */
  readonly expiresAt: number;
  /** A renewal found the claim gone: another process took the delivery over. */
  readonly lost: boolean;
  stop(): Promise<void>;
}

/** Renews the claim on `delivery` every heartbeat until stopped. */
function holdLease(opts: DeliveryOptions, delivery: WebhookDeliveriesTable): Lease {
  const leaseMs = leaseMsOf(opts);
  let expiresAt = Number(delivery.next_attempt_at ?? opts.clock.now() + leaseMs);
  let lost = false;
  let beat: Promise<void> | null = null;
  const renew = async () => {
    const now = opts.clock.now();
    try {
      if (await renewClaim(opts.handle.db, delivery, opts.owner, now + leaseMs)) expiresAt = Math.max(expiresAt, now + leaseMs);
      else lost = true;
    } catch (error) {
      // The next beat tries again; the claim holds until expiresAt meanwhile.
      opts.onWarning?.('webhook lease renewal failed', { deliveryId: delivery.id, err: error });
    }
  };
  const timer = setInterval(() => {
    if (lost) return clearInterval(timer);
    beat ??= renew().finally(() => (beat = null));
  }, heartbeatMsOf(opts));
  timer.unref();
  return {
    get expiresAt() {
      return expiresAt;
    },
    get lost() {
      return lost;
    },
    async stop() {
      clearInterval(timer);
      await beat;
    },
  };
}

/**
 * A signal that aborts `ms` after now. The abort waits one turn of the event loop after the
 * timer: when this process was busy (a long synchronous stretch, a CPU-starved machine) the
 * timer and an answer that arrived in time become ready together, and timers run before I/O;
 * the answer must win, since it came within the limit.
 */
function deadlineSignal(ms: number): { signal: AbortSignal; clear: () => void } {
  const controller = new AbortController();
  let immediate: NodeJS.Immediate | null = null;
  const timer = setTimeout(() => {
    immediate = setImmediate(() => controller.abort(new DOMException(`no answer within ${ms} ms`, 'TimeoutError')));
  }, ms);
  return {
    signal: controller.signal,
    clear: () => {
      clearTimeout(timer);
      if (immediate) clearImmediate(immediate);
    },
  };
}

/**
 * Sends one attempt and records its outcome, holding the claim (renewed) until the outcome is
 * recorded. Never throws for receiver trouble; database trouble while recording is retried for
 * as long as the claim is ours. 'lost': the claim was no longer ours (this process stalled past
 * its lease and another took the delivery over), so nothing was recorded.
 */
export async function attemptDelivery(opts: DeliveryOptions, delivery: WebhookDeliveriesTable): Promise<AttemptOutcome> {
  const lease = holdLease(opts, delivery);
  try {
    const answer = await send(opts, delivery);
    return await recordOutcome(opts, delivery, lease, answer);
  } finally {
    await lease.stop();
  }
}

interface Answer {
  startedAt: number;
  finishedAt: number;
  statusCode: number | null;
  error: string | null;
  /** No (whole) answer: a timeout or a connection error, also after a status line came. */
  unreachable: boolean;
  /** The URL guard refused the target (checkUrl, or the guarded dispatcher after DNS): nothing was sent. */
  refused: boolean;
  /** The answer's Retry-After header (schedule.ts honours it on a 429 or 503). */
  retryAfter: string | null;
}

/** The guard's refusals: a URL that is not http(s), has credentials, or names an address that is not public. */
const isRefusal = (e: unknown): e is FetchError => e instanceof FetchError && (e.code === ERR.url_forbidden || e.code === ERR.url_invalid);

async function send(opts: DeliveryOptions, delivery: WebhookDeliveriesTable): Promise<Answer> {
  const startedAt = opts.clock.now();
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': 'Zhinian-Webhooks/1',
    'x-zhinian-event': delivery.event,
    'x-zhinian-delivery': delivery.id,
  };
  const own = (await opts.clientSecrets?.(delivery.client_id)) ?? [];
  const secrets = own.length > 0 ? own : opts.secret ? [opts.secret] : [];
  Object.assign(headers, signatureHeaders(secrets, delivery.id, Math.floor(startedAt / 1000), delivery.payload));

  let statusCode: number | null = null;
  let error: string | null = null;
  let unreachable = false;
  let refused = false;
  let retryAfter: string | null = null;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const deadline = deadlineSignal(timeoutMs);
  try {
    // Checked when the job was created, but the setting may have changed since. The guarded
    // dispatcher checks again after DNS: a name that resolves only to addresses that are not public.
    checkUrl(delivery.url, { allowPrivate: opts.allowPrivateUrls });
    const res = await request(delivery.url, {
      method: 'POST',
      headers,
      body: delivery.payload,
      dispatcher: guardedDispatcher({ allowPrivate: opts.allowPrivateUrls }),
      signal: deadline.signal,
    });
    statusCode = res.statusCode;
    const header = res.headers['retry-after'];
    retryAfter = (Array.isArray(header) ? header[0] : header) ?? null;
    // Receivers' bodies are ignored; drain so the connection can be reused.
    await res.body.dump({ limit: 64 * 1024 });
    if (statusCode < 200 || statusCode > 299) error = `receiver answered HTTP ${statusCode}`;
  } catch (e) {
    const err = e as Error & { code?: string };
    if (isRefusal(e)) {
      refused = true;
      error = `refused by the URL guard: ${e.message}`;
    } else {
      unreachable = true;
      error = deadline.signal.aborted || err.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : `${err.code ?? err.name}: ${err.message}`;
    }
  } finally {
    deadline.clear();
  }
  return { startedAt, finishedAt: opts.clock.now(), statusCode, error, unreachable, refused, retryAfter };
}

/**
 * Records the attempt and settles the delivery, only while the claim is still ours (the
 * conditional update: two processes never both record one delivery), with what it means for
 * the receiver's origin (endpoints.ts: failures, block, held deliveries let go). A failed write
 * is retried with backoff while the lease holds; the heartbeat keeps it meanwhile.
 */
async function recordOutcome(opts: DeliveryOptions, delivery: WebhookDeliveriesTable, lease: Lease, answer: Answer): Promise<AttemptOutcome> {
  const { startedAt, finishedAt, statusCode, error, unreachable, refused, retryAfter } = answer;
  const next = settleAttempt({ attempt: delivery.attempts, delivered: error === null, statusCode, refused, retryAfter, answeredAt: finishedAt });
  const outcome = next.outcome;
  for (let failures = 0; ; ) {
    if (lease.lost) return 'lost';
    try {
      const recorded = await withTransaction(opts.handle, async (tx) => {
        await lockDeliveryCounts(opts.handle, tx);
        const settled = await settleClaim(tx, delivery, opts.owner, {
          status: outcome === 'retry' ? 'pending' : outcome,
          next_attempt_at: next.outcome === 'retry' ? finishedAt + next.delayMs : null,
          last_status_code: statusCode,
          last_error: error === null ? null : storableText(error, 500),
          delivered_at: outcome === 'delivered' ? finishedAt : null,
        });
        if (!settled) return false;
        await tx
          .insertInto('webhook_attempts')
          .values({
            delivery_id: delivery.id,
            attempt: delivery.attempts,
            started_at: startedAt,
            duration_ms: finishedAt - startedAt,
            status_code: statusCode,
            error: error === null ? null : storableText(error, 500),
          })
          .onConflict((oc) => oc.columns(['delivery_id', 'attempt']).doNothing())
          .execute();
        await afterAttempt(
          tx,
          policyOf(opts),
          livenessOf(opts),
          delivery.client_id,
          delivery.origin,
          error === null ? 'delivered' : refused ? 'refused' : unreachable ? 'unreachable' : 'answered',
          finishedAt,
          opts.clock.now(),
        );
        return true;
      });
      return recorded ? outcome : 'lost';
    } catch (e) {
      failures++;
      const wait = outageBackoffMs(failures);
      // Past the lease another process may send it again; this one stops trying then.
      if (lease.lost || opts.clock.now() + wait >= lease.expiresAt) throw e;
      opts.onWarning?.('recording a webhook attempt failed; retrying', { deliveryId: delivery.id, attempt: delivery.attempts, failures, err: e });
      await sleep(wait);
    }
  }
}
