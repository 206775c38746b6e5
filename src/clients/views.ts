import type { Selectable } from 'kysely';
import type { ClientsTable, KeysTable } from '../db/index.ts';
import { iso } from '../lib/clock.ts';

export interface KeyView {
  id: string;
  /** The part of a console key that names it; empty for env keys (nothing of them is ever shown). */
  prefix: string;
  /** `console`: made here; `env`: from ZHINIAN_API_KEYS; `generated`: made at first start and kept in the data dir. */
  origin: 'console' | 'env' | 'generated';
  createdAt: string | null;
  lastUsedAt: string | null;
  expiresAt: string | null;
  revokedAt: string | null;
}

/** A client's own settings (null: the env default) as the console edits them. */
export interface ClientSettingsView {
  rateLimitJobsPerMinute: number | null;
  rateLimitRequestsPerMinute: number | null;
  maxRunning: number | null;
  weight: number | null;
  allowedEngines: string[] | null;
  webhookSecretSet: boolean;
}

export interface ClientView {
  id: string;
  name: string;
  /** `env`: keys from ZHINIAN_API_KEYS (read-only here); `console`: made in the console. */
  source: 'env' | 'console';
  disabled: boolean;
  createdAt: string | null;
  keys: KeyView[];
  settings: ClientSettingsView;
  /**
   * How its webhooks are signed: `own` (its own secret), `shared` (ZHINIAN_WEBHOOK_SECRET, which
   * every client without its own shares: any of them can make events that verify as another's),
   * `unsigned` (no secret anywhere).
   */
  webhookSigning: 'own' | 'shared' | 'unsigned';
  sharesWebhookSecret: boolean;
}

const at = (v: number | null) => (v === null ? null : iso(Number(v)));

/**
 * "Last used" is kept at minute resolution: never shown before the key existed (a key made and
 * used within one minute would otherwise look used before it was made).
 */
export const lastUsedView = (lastUsedAt: number | null, createdAt: number | null) => (lastUsedAt === null ? null : iso(Math.max(Number(lastUsedAt), Number(createdAt ?? 0))));

export function keyView(row: Selectable<KeysTable>, prefix: string): KeyView {
  return {
    id: row.id,
    prefix,
    origin: 'console',
    createdAt: at(row.created_at),
    lastUsedAt: lastUsedView(row.last_used_at, row.created_at),
    expiresAt: at(row.expires_at),
    revokedAt: at(row.revoked_at),
  };
}

export function settingsView(row: Selectable<ClientsTable> | undefined): ClientSettingsView {
  return {
    rateLimitJobsPerMinute: row?.rate_limit_jobs_per_minute ?? null,
    rateLimitRequestsPerMinute: row?.rate_limit_requests_per_minute ?? null,
    maxRunning: row?.max_running ?? null,
    weight: row?.weight ?? null,
    allowedEngines: row?.allowed_engines ? (JSON.parse(row.allowed_engines) as string[]) : null,
    webhookSecretSet: Boolean(row?.webhook_secret),
  };
}
