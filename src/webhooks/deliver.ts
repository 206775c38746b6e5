import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { guardedDispatcher } from '../net/index.ts';
import type { DbHandle, WebhookDeliveriesTable } from '../db/index.ts';
import { withTransaction } from '../db/index.ts';
import { outageBackoffMs } from '../lib/retry-ladders.ts';
import type { Clock } from '../lib/clock.ts';
import { signPayload } from './sign.ts';
import { MAX_DELIVERY_ATTEMPTS, retryDelayMs } from './schedule.ts';

export interface DeliveryOptions {
  handle: DbHandle;
  clock: Clock;
  /** Who holds a claimed delivery (worker id). */
  owner: string;
  secret: string | null;
  allowPrivateUrls: boolean;
  /** The receiver's whole answer must come within this (contract: 10 s). */
  timeoutMs?: number;
  /** A claimed delivery whose sender stops renewing it becomes due again after this (default 30 s). */
  leaseMs?: number;
  /** How often an attempt in flight renews its claim (real time; default a sixth of the lease). */
  heartbeatMs?: number;
  /** Told about database trouble that an attempt survives (a failed renewal, a retried record). */
  onWarning?: (message: string, details: Record<string, unknown>) => void;
}

export type AttemptOutcome = 'delivered' | 'retry' | 'failed' | 'lost';

const DEFAULT_TIMEOUT_MS = 10_000;
/**
 * How long a claim holds without renewal. An attempt renews it every sixth of this while it is
 * in flight (sending, then recording the answer), so it lapses only when its process dies or
 * stalls for most of this: only then does another process send the event again.
 */
export const DEFAULT_DELIVERY_LEASE_MS = 30_000;

/**
 * Claims the next due delivery under a lease: its next_attempt_at moves a lease ahead and
 * lease_owner names this process. The attempt renews the lease until its outcome is recorded,
 * so another process only sends it again if this one dies (or stalls past the lease). The claim
 * is a conditional update, so two processes never send the same attempt.
 */
export async function claimDueDelivery(opts: DeliveryOptions): Promise<WebhookDeliveriesTable | null> {
  const { db } = opts.handle;
  const now = opts.clock.now();
  // Read first: idle senders poll, and a read never takes SQLite's write lock.
  const due = await db.selectFrom('webhook_deliveries').select('id').where('next_attempt_at', '<=', now).limit(1).executeTakeFirst();
  if (!due) return null;
  let next = db.selectFrom('webhook_deliveries').select('id').where('next_attempt_at', '<=', now).orderBy('next_attempt_at').limit(1);
  if (opts.handle.dialect === 'postgres') next = next.forUpdate().skipLocked();
  const row = await db
    .updateTable('webhook_deliveries')
    .set((eb) => ({ next_attempt_at: now + leaseMsOf(opts), lease_owner: opts.owner, attempts: eb('attempts', '+', 1) }))
    .where('id', '=', next)
    .where('next_attempt_at', '<=', now)
    .returningAll()
    .executeTakeFirst();
  return row ?? null;
}

const leaseMsOf = (opts: DeliveryOptions) => opts.leaseMs ?? DEFAULT_DELIVERY_LEASE_MS;

/** One claim (delivery and attempt number) held by `opts.owner`. */
const heldClaim = (opts: DeliveryOptions, delivery: WebhookDeliveriesTable) =>
  opts.handle.db.updateTable('webhook_deliveries').where('id', '=', delivery.id).where('lease_owner', '=', opts.owner).where('attempts', '=', delivery.attempts);

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
      const res = await heldClaim(opts, delivery)
        .set({ next_attempt_at: now + leaseMs })
        .executeTakeFirst();
      if (Number(res.numUpdatedRows) === 1) expiresAt = Math.max(expiresAt, now + leaseMs);
      else lost = true;
    } catch (error) {
      // The next beat tries again; the claim holds until expiresAt meanwhile.
      opts.onWarning?.('webhook lease renewal failed', { deliveryId: delivery.id, err: error });
    }
  };
  const timer = setInterval(
    () => {
      if (lost) return clearInterval(timer);
      beat ??= renew().finally(() => (beat = null));
    },
    opts.heartbeatMs ?? Math.max(1, Math.floor(leaseMs / 6)),
  );
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
}

async function send(opts: DeliveryOptions, delivery: WebhookDeliveriesTable): Promise<Answer> {
  const startedAt = opts.clock.now();
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': 'Zhinian-Webhooks/1',
    'x-zhinian-event': delivery.event,
    'x-zhinian-delivery': delivery.id,
  };
  if (opts.secret) headers['x-zhinian-signature'] = signPayload(opts.secret, delivery.payload);

  let statusCode: number | null = null;
  let error: string | null = null;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const deadline = deadlineSignal(timeoutMs);
  try {
    const res = await request(delivery.url, {
      method: 'POST',
      headers,
      body: delivery.payload,
      dispatcher: guardedDispatcher({ allowPrivate: opts.allowPrivateUrls }),
      signal: deadline.signal,
    });
    statusCode = res.statusCode;
    // Receivers' bodies are ignored; drain so the connection can be reused.
    await res.body.dump({ limit: 64 * 1024 });
    if (statusCode < 200 || statusCode > 299) error = `receiver answered HTTP ${statusCode}`;
  } catch (e) {
    const err = e as Error & { code?: string };
    error = deadline.signal.aborted || err.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : `${err.code ?? err.name}: ${err.message}`;
  } finally {
    deadline.clear();
  }
  return { startedAt, finishedAt: opts.clock.now(), statusCode, error };
}

/**
 * Records the attempt and settles the delivery, only while the claim is still ours (the
 * conditional update: two processes never both record one delivery). A failed write is
 * retried with backoff while the lease holds; the heartbeat keeps it meanwhile.
 */
async function recordOutcome(opts: DeliveryOptions, delivery: WebhookDeliveriesTable, lease: Lease, answer: Answer): Promise<AttemptOutcome> {
  const { startedAt, finishedAt, statusCode, error } = answer;
  const outcome = error === null ? 'delivered' : delivery.attempts >= MAX_DELIVERY_ATTEMPTS ? 'failed' : 'retry';
  const delay = outcome === 'retry' ? (retryDelayMs(delivery.attempts) ?? 0) : 0;
  for (let failures = 0; ; ) {
    if (lease.lost) return 'lost';
    try {
      const recorded = await withTransaction(opts.handle, async (tx) => {
        const res = await tx
          .updateTable('webhook_deliveries')
          .set({
            status: outcome === 'retry' ? 'pending' : outcome,
            next_attempt_at: outcome === 'retry' ? finishedAt + delay : null,
            lease_owner: null,
            last_status_code: statusCode,
            last_error: error?.slice(0, 500) ?? null,
            delivered_at: outcome === 'delivered' ? finishedAt : null,
          })
          .where('id', '=', delivery.id)
          .where('lease_owner', '=', opts.owner)
          .where('attempts', '=', delivery.attempts)
          .executeTakeFirst();
        if (Number(res.numUpdatedRows) !== 1) return false;
        await tx
          .insertInto('webhook_attempts')
          .values({
            delivery_id: delivery.id,
            attempt: delivery.attempts,
            started_at: startedAt,
            duration_ms: finishedAt - startedAt,
            status_code: statusCode,
            error: error?.slice(0, 500) ?? null,
          })
          .onConflict((oc) => oc.columns(['delivery_id', 'attempt']).doNothing())
          .execute();
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
