import type { Generated, Kysely } from 'kysely';

/**
 * Table shapes. SQL is snake_case; only repo modules convert rows to API objects.
 * Times are epoch milliseconds (`*_at`), except the per-client sort keys `created_at_us`
 * (microseconds, unique per client, so paging by time never skips or repeats a row).
 * JSON columns hold text.
 */
export interface JobsTable {
  id: string;
  client_id: string;
  capability: string;
  status: string;
  prompt: string | null;
  params: string;
  input_asset_ids: string;
  output_asset_ids: string;
  error_code: string | null;
  error_message: string | null;
  progress: number | null;
  engine: string;
  webhook_url: string | null;
  metadata: string | null;
  created_at_us: number;
  updated_at: number;
  started_at: number | null;
  finished_at: number | null;
  attempts: number;
  /** When the job may next be claimed: creation time while queued, lease expiry while running, null when terminal. */
  run_at: number | null;
  lease_owner: string | null;
  /** Engine-specific resume state (remote task handle), JSON. */
  engine_state: string | null;
  /** 1 when the client named the engine: the job never moves to another. */
  engine_pinned: number;
  /** A queued job's place in its engine's fair order between clients (queue/fair-order.ts). */
  fair_key: number;
  /** Bumped by every transition a client can see: the live status stream's event id. */
  version: number;
  /** The named waiting sub-state (queue/transitions.ts): `retry`, `handed_back`, `provider_rate_limited`, or null. */
  waiting: string | null;
  /** Until when a `provider_rate_limited` job waits (epoch ms). */
  waiting_until: number | null;
}

/** One time a worker took a job (queue/transitions.ts writes it): the job's history. */
export interface JobAttemptsTable {
  job_id: string;
  /** 1, 2, … in the order workers took the job. */
  n: number;
  engine: string;
  worker_id: string;
  started_at: number;
  ended_at: number | null;
  /** `running` while the worker is on it, else how it ended (contract: `JobAttempt['outcome']`). */
  outcome: string;
  error_code: string | null;
  error_message: string | null;
  provider_task_id: string | null;
}

/** SQLite's change log of jobs, written and pruned by queue/recording.ts, polled by live/feed.ts; pruned after a minute. */
interface JobChangesTable {
  seq: Generated<number>;
  job_id: string;
  version: number;
  at: number;
}

/** One API client and its overrides of the env limits (null: the env default). */
export interface ClientsTable {
  id: string;
  max_running: number | null;
  weight: number | null;
  rate_limit_jobs_per_minute: number | null;
  rate_limit_requests_per_minute: number | null;
  created_at: number;
  updated_at: number;
  /** Display name in the console; null: the id. */
  name: string | null;
  /** 1: every key of the client is refused. */
  disabled: Generated<number>;
  /** JSON array of engine names the client may use; null: every engine. */
  allowed_engines: string | null;
  /** `console`: created in the console (its keys live in `keys`); `settings`: a row that only holds settings (e.g. of an env client). */
  source: Generated<string>;
  /** Signs this client's webhooks instead of ZHINIAN_WEBHOOK_SECRET. */
  webhook_secret: string | null;
  /** The secret before the last rotation, signing beside the new one until `webhook_secret_previous_until`. */
  webhook_secret_previous: string | null;
  webhook_secret_previous_until: number | null;
  /** JSON `[{ secret, until }]`: earlier secrets still signing until `until` (epoch ms); `secret` null is ZHINIAN_WEBHOOK_SECRET. Supersedes the two columns above. */
  webhook_secrets_previous: string | null;
}

/** An API key made in the console: `zk_<id>_<secret>`, kept as the SHA-256 hex of the whole key. */
export interface KeysTable {
  id: string;
  client_id: string;
  secret_hash: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  last_used_at: number | null;
}

/** A console session (@fastify/session's data as JSON); deleted on sign-out. */
interface ConsoleSessionsTable {
  id: string;
  data: string;
  expires_at: number;
  /** Whose session: the verified e-mail or the provider's subject (console/session.ts). */
  user_key: string | null;
  created_at: number | null;
}

/** Every client id ever used, and its look-alike form (clients/ids.ts). */
interface ClientIdsTable {
  id: string;
  canonical: string;
  first_seen_at: number;
}

/** Keys from ZHINIAN_API_KEYS or the data dir, by SHA-256: when first seen and last used. */
interface EnvKeysTable {
  hash: string;
  client_id: string;
  first_seen_at: number;
  last_used_at: number | null;
}

/** A one-time sign-in link, by the SHA-256 hex of its token; deleted when used. */
interface ConsoleLoginTokensTable {
  token_hash: string;
  expires_at: number;
}

/** One change made in the console. `detail`: JSON (before/after where there is one). */
interface AuditLogTable {
  id: string;
  at: number;
  actor: string;
  action: string;
  target: string;
  detail: string;
}

interface EngineCircuitsTable {
  engine: string;
  consecutive_failures: number;
  /** While in the future the engine gets no new work; once passed, one probe is let through. */
  open_until: number | null;
  updated_at: number;
}

interface IdempotencyKeysTable {
  client_id: string;
  key: string;
  request_hash: string;
  job_id: string;
  created_at: number;
}

export interface AssetsTable {
  id: string;
  client_id: string;
  kind: string;
  name: string;
  mime_type: string;
  bytes: number;
  sha256: string;
  width: number | null;
  height: number | null;
  duration_seconds: number | null;
  source: string;
  source_url: string | null;
  job_id: string | null;
  storage_key: string;
  created_at_us: number;
}

export interface WebhookDeliveriesTable {
  id: string;
  job_id: string;
  client_id: string;
  event: string;
  url: string;
  /** The exact bytes sent (and signed) on every attempt. */
  payload: string;
  status: string;
  attempts: number;
  /** Next attempt; while an attempt is in flight, the time its claim lapses. */
  next_attempt_at: number | null;
  lease_owner: string | null;
  last_status_code: number | null;
  last_error: string | null;
  created_at: number;
  delivered_at: number | null;
  /** `scheme://host:port` of `url`, lowercased: the receiver whose limits the delivery counts against (webhooks/endpoints.ts). */
  origin: string;
  /**
   * Set while the delivery is held back for its origin (at its in-flight cap, or blocked): its
   * own due time, so it keeps its place in line. `next_attempt_at` then says when it is looked
   * at again at the latest (the block's end, the earliest lease of the origin's attempts).
   */
  held_due_at: number | null;
}

/** Per client and receiver origin (since 0009; before, per origin): timeouts and connection errors in a row, and the backoff they earned. */
export interface WebhookEndpointsTable {
  client_id: string;
  origin: string;
  consecutive_failures: number;
  /** While in the future no attempt to this origin starts; once passed, one probe at a time until a 2xx. */
  blocked_until: number | null;
  updated_at: number;
}

interface WebhookAttemptsTable {
  delivery_id: string;
  attempt: number;
  started_at: number;
  duration_ms: number;
  status_code: number | null;
  error: string | null;
}

/** Counted events (`scope`: `jobs` created, `requests` answered) of one client in one minute (`window_start`, epoch ms), for the rate limits. */
interface RateWindowsTable {
  scope: string;
  client_id: string;
  window_start: number;
  count: number;
}

/**
 * Ended jobs per UTC day of creation (`day`: days since 1970-01-01), client, capability and the
 * engine the job ended on, by outcome (queue/usage-rollup.ts). `jobs` is the sum of the four
 * outcomes; `output_bytes` the bytes of the succeeded jobs' outputs.
 */
interface UsageDailyTable {
  day: number;
  client_id: string;
  capability: string;
  engine: string;
  jobs: number;
  succeeded: number;
  failed: number;
  expired: number;
  cancelled: number;
  output_bytes: number;
}

export interface Database {
  jobs: JobsTable;
  idempotency_keys: IdempotencyKeysTable;
  assets: AssetsTable;
  webhook_deliveries: WebhookDeliveriesTable;
  webhook_attempts: WebhookAttemptsTable;
  webhook_endpoints: WebhookEndpointsTable;
  engine_circuits: EngineCircuitsTable;
  rate_windows: RateWindowsTable;
  clients: ClientsTable;
  keys: KeysTable;
  console_sessions: ConsoleSessionsTable;
  console_login_tokens: ConsoleLoginTokensTable;
  audit_log: AuditLogTable;
  usage_daily: UsageDailyTable;
  client_ids: ClientIdsTable;
  env_keys: EnvKeysTable;
  job_attempts: JobAttemptsTable;
  job_changes: JobChangesTable;
}

export type Db = Kysely<Database>;
