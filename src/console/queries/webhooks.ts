import type { ExpressionBuilder, Selectable } from 'kysely';
import type { Database, Db, DbHandle, WebhookDeliveriesTable } from '../../db/index.ts';
import { iso } from '../../lib/clock.ts';
import { readConsole } from './reader.ts';
import { Invalid } from '../../lib/errors.ts';
import { attemptsOf, DELIVERY_STATUSES as WEBHOOK_DELIVERY_STATUSES, type DeliveryView, isInFlight, toDeliveryView } from '../../webhooks/delivery-view.ts';

/** A receiver origin that is failing: timeouts/connection errors in a row, or blocked. */
export interface EndpointView {
  /** Failures are counted and blocks applied per client and origin: one client's broken path holds up no one else. */
  clientId: string;
  origin: string;
  consecutiveFailures: number;
  /** While in the future no attempt starts; null: not blocked. */
  blockedUntil: string | null;
  blocked: boolean;
  /** Its deliveries waiting for another attempt, and given up on. */
  pending: number;
  failed: number;
}

interface AttemptView {
  attempt: number;
  startedAt: string;
  durationMs: number;
  statusCode: number | null;
  error: string | null;
}

export interface AdminDeliveryView {
  id: string;
  jobId: string;
  clientId: string;
  event: string;
  url: string;
  origin: string;
  status: DeliveryView['status'];
  /** Attempts started (the one in flight included). */
  attempts: number;
  /** Failed at least once and not delivered since (pending with an error, or failed). */
  failing: boolean;
  /** An attempt is being sent now (its claim has not lapsed). */
  inFlight: boolean;
  /** When the next attempt is due (webhooks/delivery-view.ts nextAttemptAt). */
  nextAttemptAt: string | null;
  lastStatusCode: number | null;
  lastError: string | null;
  createdAt: string;
  deliveredAt: string | null;
  attemptLog: AttemptView[];
}

export const DELIVERY_STATUSES = ['failing', ...WEBHOOK_DELIVERY_STATUSES] as const;
type DeliveryStatusFilter = (typeof DELIVERY_STATUSES)[number];

export interface DeliveryFilter {
  clientId?: string;
  status?: DeliveryStatusFilter;
  limit: number;
  /** The `nextBefore` of the previous page: `<phase>.<delivery id>`. */
  before?: string;
}

const DELIVERY_ID = /^whd_[0-9a-hjkmnp-tv-z]{26}$/;
const CURSOR = /^([01])\.(whd_[0-9a-hjkmnp-tv-z]{26})$/;

/** Query parameters `clientId`, `status`, `limit` (1–200, default 50), `before`. Throws Invalid naming the parameter. */
export function parseDeliveryFilter(query: unknown): DeliveryFilter {
  const q = (query ?? {}) as Record<string, unknown>;
  for (const key of Object.keys(q)) {
    if (!['clientId', 'status', 'limit', 'before', 'lang'].includes(key)) throw new Invalid(null, `unknown query parameter: ${key}`);
  }
  const str = (name: string): string | undefined => {
    const v = q[name];
    if (v === undefined || v === '') return undefined;
    if (typeof v !== 'string') throw new Invalid(name, 'must be given once');
    return v;
  };
  const clientId = str('clientId');
  if (clientId !== undefined && clientId.length > 128) throw new Invalid('clientId', 'must be a client id');
  const status = str('status');
  if (status !== undefined && !(DELIVERY_STATUSES as readonly string[]).includes(status)) throw new Invalid('status', `must be one of ${DELIVERY_STATUSES.join(', ')}`);
  const limitText = str('limit');
  const limit = limitText === undefined ? 50 : /^\d{1,4}$/.test(limitText) ? Number(limitText) : Number.NaN;
  if (!Number.isInteger(limit) || limit < 1 || limit > 200) throw new Invalid('limit', 'must be an integer from 1 to 200');
  const before = str('before');
  if (before !== undefined && !CURSOR.test(before)) throw new Invalid('before', 'must be a nextBefore of an earlier page');
  return { clientId, status: status as DeliveryStatusFilter | undefined, limit, before };
}

type Eb = ExpressionBuilder<Database, 'webhook_deliveries'>;

/** Failed, or pending after an attempt that failed. */
const failingExpr = (eb: Eb) => eb.or([eb('status', '=', 'failed'), eb.and([eb('status', '=', 'pending'), eb('last_error', 'is not', null)])]);

/**
 * Deliveries across clients, failing ones first, then the rest, each part newest first (ids are
 * time-ordered). Keyset paging over the two parts: the cursor names the part and the last id.
 * A status filter makes it one part.
 */
export async function listDeliveries(handle: DbHandle, filter: DeliveryFilter, now: number): Promise<{ deliveries: AdminDeliveryView[]; nextBefore: string | null }> {
  return readConsole(handle, async (db) => {
    const phases: ((eb: Eb) => ReturnType<Eb['and']>)[] =
      filter.status === undefined
        ? [(eb) => eb.and([failingExpr(eb)]), (eb) => eb.not(failingExpr(eb))]
        : [(eb) => (filter.status === 'failing' ? eb.and([failingExpr(eb)]) : eb.and([eb('status', '=', filter.status as string)]))];
    const cursor = filter.before ? CURSOR.exec(filter.before) : null;
    let phase = cursor ? Math.min(Number(cursor[1]), phases.length - 1) : 0;
    let before = cursor ? cursor[2] : undefined;
    const found: { phase: number; row: Selectable<WebhookDeliveriesTable> }[] = [];
    let more = false;
    while (phase < phases.length) {
      const want = filter.limit + 1 - found.length;
      let select = db.selectFrom('webhook_deliveries').selectAll().where(phases[phase]);
      if (filter.clientId !== undefined) select = select.where('client_id', '=', filter.clientId);
      if (before !== undefined) select = select.where('id', '<', before);
      const rows = await select.orderBy('id', 'desc').limit(want).execute();
      for (const row of rows) found.push({ phase, row });
      if (found.length > filter.limit) {
        more = true;
        break;
      }
      phase++;
      before = undefined;
    }
    const kept = found.slice(0, filter.limit);
    const last = kept[kept.length - 1];
    return {
      deliveries: await withAttempts(
        db,
        kept.map((k) => k.row),
        now,
      ),
      nextBefore: more && last ? `${last.phase}.${last.row.id}` : null,
    };
  });
}

/** One delivery with its attempts; null when there is none. */
export async function deliveryById(handle: DbHandle, id: string, now: number): Promise<AdminDeliveryView | null> {
  return readConsole(handle, async (db) => {
    if (!DELIVERY_ID.test(id)) return null;
    const row = await db.selectFrom('webhook_deliveries').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? ((await withAttempts(db, [row], now))[0] ?? null) : null;
  });
}

async function withAttempts(db: Db, rows: Selectable<WebhookDeliveriesTable>[], now: number): Promise<AdminDeliveryView[]> {
  const attempts = await attemptsOf(
    db,
    rows.map((r) => r.id),
  );
  return rows.map((r) =>
    toAdminDeliveryView(
      r,
      attempts.filter((a) => a.delivery_id === r.id),
      now,
    ),
  );
}

/** The partners' read model (webhooks/delivery-view.ts) with what an operator needs besides. */
function toAdminDeliveryView(r: Selectable<WebhookDeliveriesTable>, attempts: Awaited<ReturnType<typeof attemptsOf>>, now: number): AdminDeliveryView {
  const view = toDeliveryView(r, attempts, now);
  return {
    id: r.id,
    jobId: r.job_id,
    clientId: r.client_id,
    event: r.event,
    url: r.url,
    origin: r.origin,
    status: view.status,
    attempts: Number(r.attempts),
    failing: r.status === 'failed' || (r.status === 'pending' && r.last_error !== null),
    inFlight: isInFlight(r, now),
    nextAttemptAt: view.nextAttemptAt,
    lastStatusCode: r.last_status_code === null ? null : Number(r.last_status_code),
    lastError: r.last_error,
    createdAt: view.createdAt,
    deliveredAt: r.delivered_at === null ? null : iso(Number(r.delivered_at)),
    attemptLog: view.attempts.map(({ at, ...a }, i) => ({ attempt: Number(attempts[i]!.attempt), startedAt: at, ...a })),
  };
}

/**
 * Receiver origins in trouble, worst first: failures in a row or a block still running, with
 * how many of their deliveries wait or were given up on.
 */
export async function failingEndpoints(handle: DbHandle, now: number, limit = 100): Promise<EndpointView[]> {
  return readConsole(handle, async (db) => {
    const rows = await db
      .selectFrom('webhook_endpoints')
      .select(['client_id', 'origin', 'consecutive_failures', 'blocked_until'])
      .where((eb) => eb.or([eb('consecutive_failures', '>', 0), eb('blocked_until', '>', now)]))
      .orderBy('consecutive_failures', 'desc')
      .orderBy('origin')
      .orderBy('client_id')
      .limit(limit)
      .execute();
    // Receivers whose deliveries fail on HTTP answers (no failures counted for them) show too.
    const answered = await db
      .selectFrom('webhook_deliveries')
      .select(['client_id', 'origin', 'status', (eb) => eb.fn.countAll().as('n')])
      .where((eb) => failingExpr(eb))
      .groupBy(['client_id', 'origin', 'status'])
      .execute();
    const keyOf = (clientId: string, origin: string) => `${clientId} ${origin}`;
    const counts = new Map<string, { clientId: string; origin: string; pending: number; failed: number }>();
    for (const a of answered) {
      const key = keyOf(a.client_id, a.origin);
      const c = counts.get(key) ?? { clientId: a.client_id, origin: a.origin, pending: 0, failed: 0 };
      if (a.status === 'failed') c.failed += Number(a.n);
      else c.pending += Number(a.n);
      counts.set(key, c);
    }
    const out: EndpointView[] = rows.map((r) => {
      const blockedUntil = r.blocked_until === null ? null : Number(r.blocked_until);
      const c = counts.get(keyOf(r.client_id, r.origin));
      return {
        clientId: r.client_id,
        origin: r.origin,
        consecutiveFailures: Number(r.consecutive_failures),
        blockedUntil: blockedUntil === null ? null : iso(blockedUntil),
        blocked: blockedUntil !== null && blockedUntil > now,
        pending: c?.pending ?? 0,
        failed: c?.failed ?? 0,
      };
    });
    const known = new Set(out.map((e) => keyOf(e.clientId, e.origin)));
    for (const [key, c] of counts) {
      if (known.has(key) || out.length >= limit) continue;
      out.push({ ...c, consecutiveFailures: 0, blockedUntil: null, blocked: false });
    }
    return out;
  });
}
