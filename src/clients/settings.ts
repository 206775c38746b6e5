import type { Selectable } from 'kysely';
import type { ClientsTable, DbHandle } from '../db/index.ts';
import { signingSecrets } from './webhook-secrets.ts';

/** A client's settings in effect: its own overrides where set, else the env defaults. */
export interface ClientSettings {
  /** Jobs running at once across every worker; 0: unlimited. */
  maxRunning: number;
  /** Share of the workers while clients compete (2: twice the turns of a weight-1 client). */
  weight: number;
  /** Job creations per sliding minute; 0: unlimited. */
  rateLimitJobsPerMinute: number;
  /** `/api/v1` requests per sliding minute; 0: unlimited. */
  rateLimitRequestsPerMinute: number;
  /** Every key of the client is refused (401). */
  disabled: boolean;
  /** Engines the client may use; null: every engine. */
  allowedEngines: string[] | null;
  /** Secrets signing the client's webhooks, newest first (two while a rotation overlaps); empty: ZHINIAN_WEBHOOK_SECRET. */
  webhookSecrets: string[];
}

/** Overrides that reach every process within this long (the console promises 5 s). */
const SETTINGS_REFRESH_MS = 2000;

export interface ClientDirectory {
  /** Settings in effect for `clientId`, from a snapshot at most SETTINGS_REFRESH_MS old. */
  settingsOf(clientId: string): Promise<ClientSettings>;
  /** Whether any client may have a running cap now (when none, a claim need not count). */
  anyRunningCap(): Promise<boolean>;
  /** The env defaults. */
  readonly defaults: ClientSettings;
}

/**
 * Per-client settings live in the `clients` table, one row per client, each override nullable
 * (null: the env default). Every process keeps a snapshot of the rows that override anything,
 * reloaded when older than SETTINGS_REFRESH_MS on the next read, so the hot paths (each
 * request, each job creation, each claim) read memory, not the database.
 */
export function createClientDirectory(
  handle: DbHandle,
  defaults: Pick<ClientSettings, 'maxRunning' | 'rateLimitJobsPerMinute' | 'rateLimitRequestsPerMinute'> & {
    weight?: number;
    /** ZHINIAN_WEBHOOK_SECRET: it keeps signing beside a client's first own secret during the overlap. */
    sharedWebhookSecret?: string | null;
  },
): ClientDirectory {
  const { sharedWebhookSecret = null, ...limits } = defaults;
  const base: ClientSettings = { weight: 1, disabled: false, allowedEngines: null, webhookSecrets: [], ...limits };
  let snapshot = new Map<string, ClientSettings>();
  let loadedAt = Number.NEGATIVE_INFINITY;
  let loading: Promise<void> | null = null;

  async function load(): Promise<void> {
    // One row per client that has a setting: a few thousand at most, read whole.
    const rows = await handle.db.selectFrom('clients').selectAll().execute();
    const now = Date.now();
    snapshot = new Map(rows.map((row) => [row.id, effectiveSettings(row, base, { now, sharedWebhookSecret })]));
    loadedAt = performance.now();
  }

  async function fresh(): Promise<Map<string, ClientSettings>> {
    if (performance.now() - loadedAt >= SETTINGS_REFRESH_MS) {
      loading ??= load().finally(() => (loading = null));
      // A failed reload keeps serving the last snapshot; the next read tries again.
      await loading.catch(() => {});
    }
    return snapshot;
  }

  return {
    defaults: base,
    async settingsOf(clientId) {
      return (await fresh()).get(clientId) ?? base;
    },
    async anyRunningCap() {
      if (base.maxRunning > 0) return true;
      for (const limits of (await fresh()).values()) if (limits.maxRunning > 0) return true;
      return false;
    },
  };
}

/** A client row's settings in effect at `at.now` (epoch ms): its overrides, else `base`. */
function effectiveSettings(row: Selectable<ClientsTable>, base: ClientSettings, at: { now: number; sharedWebhookSecret: string | null }): ClientSettings {
  return {
    maxRunning: row.max_running ?? base.maxRunning,
    weight: row.weight ?? base.weight,
    rateLimitJobsPerMinute: row.rate_limit_jobs_per_minute ?? base.rateLimitJobsPerMinute,
    rateLimitRequestsPerMinute: row.rate_limit_requests_per_minute ?? base.rateLimitRequestsPerMinute,
    disabled: Number(row.disabled) === 1,
    allowedEngines: row.allowed_engines === null ? null : (JSON.parse(row.allowed_engines) as string[]),
    webhookSecrets: signingSecrets({ current: row.webhook_secret, previousJson: row.webhook_secrets_previous, shared: at.sharedWebhookSecret, now: at.now }),
  };
}
