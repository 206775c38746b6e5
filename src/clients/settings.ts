import type { ClientsTable, DbHandle } from '../db/index.ts';

/** A client's limits in effect: its own overrides where set, else the env defaults. */
export interface ClientLimits {
  /** Jobs running at once across every worker; 0: unlimited. */
  maxRunning: number;
  /** Share of the workers while clients compete (2: twice the turns of a weight-1 client). */
  weight: number;
  /** Job creations per sliding minute; 0: unlimited. */
  rateLimitJobsPerMinute: number;
  /** `/api/v1` requests per sliding minute; 0: unlimited. */
  rateLimitRequestsPerMinute: number;
}

/** Overrides that reach every process within this long (the console promises 5 s). */
const SETTINGS_REFRESH_MS = 2000;

export interface ClientDirectory {
  /** Limits in effect for `clientId`, from a snapshot at most SETTINGS_REFRESH_MS old. */
  limitsOf(clientId: string): Promise<ClientLimits>;
  /** Whether any client may have a running cap now (when none, a claim need not count). */
  anyRunningCap(): Promise<boolean>;
  /** The env defaults. */
  readonly defaults: ClientLimits;
}

/**
 * Per-client settings live in the `clients` table, one row per client, each override nullable
 * (null: the env default). Every process keeps a snapshot of the rows that override anything,
 * reloaded when older than SETTINGS_REFRESH_MS on the next read, so the hot paths (each
 * request, each job creation, each claim) read memory, not the database.
 */
export function createClientDirectory(handle: DbHandle, defaults: Omit<ClientLimits, 'weight'> & { weight?: number }): ClientDirectory {
  const base: ClientLimits = { weight: 1, ...defaults };
  let snapshot = new Map<string, ClientLimits>();
  let loadedAt = Number.NEGATIVE_INFINITY;
  let loading: Promise<void> | null = null;

  const effective = (row: ClientsTable): ClientLimits => ({
    maxRunning: row.max_running ?? base.maxRunning,
    weight: row.weight ?? base.weight,
    rateLimitJobsPerMinute: row.rate_limit_jobs_per_minute ?? base.rateLimitJobsPerMinute,
    rateLimitRequestsPerMinute: row.rate_limit_requests_per_minute ?? base.rateLimitRequestsPerMinute,
  });

  async function load(): Promise<void> {
    const rows = await handle.db
      .selectFrom('clients')
      .selectAll()
      .where((eb) =>
        eb.or([
          eb('max_running', 'is not', null),
          eb('weight', 'is not', null),
          eb('rate_limit_jobs_per_minute', 'is not', null),
          eb('rate_limit_requests_per_minute', 'is not', null),
        ]),
      )
      .execute();
    snapshot = new Map(rows.map((row) => [row.id, effective(row)]));
    loadedAt = performance.now();
  }

  async function fresh(): Promise<Map<string, ClientLimits>> {
    if (performance.now() - loadedAt >= SETTINGS_REFRESH_MS) {
      loading ??= load().finally(() => (loading = null));
      // A failed reload keeps serving the last snapshot; the next read tries again.
      await loading.catch(() => {});
    }
    return snapshot;
  }

  return {
    defaults: base,
    async limitsOf(clientId) {
      return (await fresh()).get(clientId) ?? base;
    },
    async anyRunningCap() {
      if (base.maxRunning > 0) return true;
      for (const limits of (await fresh()).values()) if (limits.maxRunning > 0) return true;
      return false;
    },
  };
}
