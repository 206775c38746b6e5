import path from 'node:path';
import { z } from 'zod';
import { asciiLowerCase } from '../lib/ascii.ts';

const bool = z.enum(['true', 'false']).transform((v) => v === 'true');
const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max);

/** Every environment variable the app reads, with its default and unit. */
const envSchema = z.object({
  PORT: int(0, 65535).default(3000),
  HOST: z.string().min(1).default('127.0.0.1'),
  ZHINIAN_DATA_DIR: z.string().min(1).default('./data'),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL (unset it for the embedded SQLite database)')
    .optional(),
  ZHINIAN_DB_POOL_MAX: int(1, 1000).default(10),
  ZHINIAN_API_KEYS: z
    .string()
    .optional()
    .transform((value, ctx) => {
      if (value === undefined) return undefined;
      try {
        return parseApiKeys(value);
      } catch (error) {
        ctx.addIssue({ code: 'custom', message: (error as Error).message.replace(/^ZHINIAN_API_KEYS: /, '') });
        return z.NEVER;
      }
    }),
  ZHINIAN_WEBHOOK_SECRET: z.string().min(1).optional(),
  ZHINIAN_PUBLIC_BASE_URL: z.url({ protocol: /^https?$/ }).optional(),
  ZHINIAN_ALLOW_PRIVATE_URLS: bool.default(false),
  ZHINIAN_MAX_UPLOAD_BYTES: int(1).default(52_428_800),
  ZHINIAN_QUEUE_TTL_SECONDS: int(1).default(86_400),
  ZHINIAN_JOB_TIMEOUT_SECONDS: int(1).default(1_800),
  ZHINIAN_JOB_LEASE_SECONDS: int(1).default(60),
  ZHINIAN_WORKER_CONCURRENCY: int(1, 256).default(2),
  ZHINIAN_MAX_ATTEMPTS: int(1, 20).default(3),
  ZHINIAN_RATE_LIMIT_JOBS_PER_MINUTE: int(0, 1_000_000).default(0),
  ZHINIAN_RATE_LIMIT_REQUESTS_PER_MINUTE: int(0, 10_000_000).default(0),
  ZHINIAN_CLIENT_MAX_RUNNING: int(0, 1_000_000).default(0),
  ZHINIAN_POLL_INTERVAL_MS: int(10, 60_000).default(100),
  ZHINIAN_MAX_INPUT_PIXELS: int(1).default(268_402_689),
  ZHINIAN_REQUEST_TIMEOUT_SECONDS: int(1, 86_400).default(120),
  ZHINIAN_SHUTDOWN_GRACE_SECONDS: int(0, 3_600).default(10),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  ZHINIAN_SIGNING_SECRET: z.string().min(16).optional(),
  ZHINIAN_SIGNED_URL_TTL_SECONDS: int(60, 7 * 86_400).default(3600),
  ZHINIAN_REMOTE_CONCURRENCY: int(1, 10_000).default(500),
  // Remote engines: each is offered only when its credentials are set.
  ZHINIAN_JIMENG_BASE_URL: z.url().default('https://visual.volcengineapi.com'),
  ZHINIAN_VOLC_ACCESS_KEY_ID: z.string().optional(),
  ZHINIAN_VOLC_SECRET_ACCESS_KEY: z.string().optional(),
  ZHINIAN_VOLC_SECURITY_TOKEN: z.string().optional(),
  ZHINIAN_VOLC_REGION: z.string().default('cn-north-1'),
  ZHINIAN_JIMENG_IMAGE_REQ_KEY: z.string().default('jimeng_t2i_v40'),
  ZHINIAN_JIMENG_MAX_CONCURRENCY: int(1, 1000).default(2),
  ZHINIAN_ARK_BASE_URL: z.url().default('https://ark.cn-beijing.volces.com/api/v3'),
  ZHINIAN_ARK_API_KEY: z.string().optional(),
  ZHINIAN_ARK_VIDEO_MODEL: z.string().default('doubao-seedance-2-0-260128'),
  ZHINIAN_ARK_MAX_CONCURRENCY: int(1, 1000).default(10),
  ZHINIAN_EVOLINK_BASE_URL: z.url().default('https://api.evolink.ai'),
  ZHINIAN_EVOLINK_API_KEY: z.string().optional(),
  ZHINIAN_EVOLINK_IMAGE_MODEL: z.string().default('gpt-image-1'),
  ZHINIAN_EVOLINK_MAX_CONCURRENCY: int(1, 1000).default(10),
  ZHINIAN_PROVIDER_POLL_INTERVAL_MS: int(1, 600_000).optional(),
  ZHINIAN_PROVIDER_HTTP_TIMEOUT_MS: int(100, 600_000).default(30_000),
  ZHINIAN_ENGINES_IMAGE_GENERATE: z.string().optional(),
  ZHINIAN_ENGINES_IMAGE_INPAINT: z.string().optional(),
  ZHINIAN_ENGINES_IMAGE_UPSCALE: z.string().optional(),
  ZHINIAN_ENGINES_VIDEO_GENERATE: z.string().optional(),
  // S3-compatible asset storage, used instead of <data dir>/assets when a bucket is set.
  ZHINIAN_S3_BUCKET: z
    .string()
    .regex(/^[A-Za-z0-9._-]{3,255}$/, 'a bucket name, not a URL or path')
    .optional(),
  ZHINIAN_S3_ENDPOINT: z.url({ protocol: /^https?$/ }).optional(),
  ZHINIAN_S3_REGION: z.string().min(1).default('us-east-1'),
  ZHINIAN_S3_ACCESS_KEY_ID: z.string().optional(),
  ZHINIAN_S3_SECRET_ACCESS_KEY: z.string().optional(),
  ZHINIAN_S3_FORCE_PATH_STYLE: bool.default(false),
  ZHINIAN_S3_PRESIGN: bool.default(false),
  ZHINIAN_S3_PREFIX: z.string().optional(),
  // The browser console (/admin): SSO through any OpenID Connect provider, or one-time links.
  ZHINIAN_OIDC_ISSUER: z.url({ protocol: /^https?$/ }).optional(),
  ZHINIAN_OIDC_CLIENT_ID: z.string().min(1).optional(),
  ZHINIAN_OIDC_CLIENT_SECRET: z.string().min(1).optional(),
  ZHINIAN_OIDC_SCOPES: z.string().min(1).default('openid email profile'),
  ZHINIAN_ADMIN_EMAILS: z.string().optional(),
  ZHINIAN_VIEWER_EMAILS: z.string().optional(),
  ZHINIAN_OIDC_GROUPS_CLAIM: z.string().min(1).optional(),
  ZHINIAN_ADMIN_GROUPS: z.string().optional(),
  ZHINIAN_VIEWER_GROUPS: z.string().optional(),
  ZHINIAN_OIDC_ALLOW_UNVERIFIED_EMAIL: bool.default(false),
  ZHINIAN_SESSION_SECRET: z.string().min(32, 'at least 32 characters').optional(),
  ZHINIAN_SESSION_TTL_SECONDS: int(60, 30 * 86_400).default(28_800),
});

/** Every environment variable the app reads (deployment files are checked against this). */
export const ENV_VARS: readonly string[] = Object.keys(envSchema.shape);

export type Env = Record<string, string | undefined>;

export interface ApiKey {
  clientId: string;
  key: string;
}

export interface Config {
  http: { port: number; host: string; publicBaseUrl: string | null };
  dataDir: string;
  databaseUrl: string | null;
  /** PostgreSQL connections one process keeps at most. */
  dbPoolMax: number;
  /** null: generate (or reuse) a key for client `default` kept in the data dir. */
  apiKeys: ApiKey[] | null;
  webhookSecret: string | null;
  allowPrivateUrls: boolean;
  maxUploadBytes: number;
  queueTtlMs: number;
  jobTimeoutMs: number;
  leaseMs: number;
  maxAttempts: number;
  /** Job creations per client per sliding minute, across all API instances; 0: unlimited. */
  rateLimitJobsPerMinute: number;
  /** Every `/api/v1` request of one client per sliding minute, across all API instances; 0: unlimited. */
  rateLimitRequestsPerMinute: number;
  /** Jobs of one client running at once, across all workers; 0: unlimited. */
  clientMaxRunning: number;
  workerConcurrency: number;
  /** How often a worker without in-process wake-ups looks for new jobs. */
  pollIntervalMs: number;
  /** Largest width × height of any image the service decodes (uploads, URL assets, job inputs, provider outputs). */
  maxInputPixels: number;
  /** A request whose headers and body have not fully arrived by then is answered 408 and closed. */
  requestTimeoutMs: number;
  /** On SIGTERM, how long in-flight requests may finish before their sockets are closed. */
  shutdownGraceMs: number;
  logLevel: z.infer<typeof envSchema>['LOG_LEVEL'];
  /** Key of signed asset URLs; null: generated once and kept in the data dir. */
  signingSecret: string | null;
  signedUrlTtlSeconds: number;
  /** Remote tasks one worker tracks at once (each is a timer and a poll, not a thread). */
  remoteConcurrency: number;
  providers: ProvidersConfig;
  /** Engine preference per capability, when configured (`ZHINIAN_ENGINES_<CAPABILITY>`). */
  enginePreference: Partial<Record<'image.generate' | 'image.inpaint' | 'image.upscale' | 'video.generate', string[]>>;
  storage: StorageConfig;
  console: ConsoleConfig;
}

/** Who may sign in to the console, and how. */
export interface ConsoleConfig {
  /** null: no identity provider; sign-in is by one-time link (`npm run admin-link`). */
  oidc: { issuer: string; clientId: string; clientSecret: string | null; scopes: string } | null;
  /** Lower-cased addresses or `*@domain` patterns. */
  adminEmails: string[];
  viewerEmails: string[];
  /**
   * Give e-mail roles to identities whose provider sends no `email_verified` (never to one it
   * says is unverified). Off: only `email_verified: true` counts.
   */
  allowUnverifiedEmail: boolean;
  /** A claim whose values give roles, with the groups that give each. */
  groupsClaim: string | null;
  adminGroups: string[];
  viewerGroups: string[];
  /** Key of session cookies; null: generated once and kept in the data dir. */
  sessionSecret: string | null;
  sessionTtlMs: number;
}

const list = (value: string | undefined, lowerCase = false) =>
  (value ?? '')
    .split(',')
    .map((s) => (lowerCase ? asciiLowerCase(s.trim()) : s.trim()))
    .filter(Boolean);

function consoleFromEnv(e: z.infer<typeof envSchema>): ConsoleConfig {
  if (e.ZHINIAN_OIDC_ISSUER && !e.ZHINIAN_OIDC_CLIENT_ID) {
    throw new ConfigError('Invalid configuration:\n  ZHINIAN_OIDC_CLIENT_ID: required when ZHINIAN_OIDC_ISSUER is set');
  }
  return {
    oidc: e.ZHINIAN_OIDC_ISSUER
      ? { issuer: e.ZHINIAN_OIDC_ISSUER, clientId: e.ZHINIAN_OIDC_CLIENT_ID!, clientSecret: e.ZHINIAN_OIDC_CLIENT_SECRET ?? null, scopes: e.ZHINIAN_OIDC_SCOPES }
      : null,
    adminEmails: list(e.ZHINIAN_ADMIN_EMAILS, true),
    viewerEmails: list(e.ZHINIAN_VIEWER_EMAILS, true),
    allowUnverifiedEmail: e.ZHINIAN_OIDC_ALLOW_UNVERIFIED_EMAIL,
    groupsClaim: e.ZHINIAN_OIDC_GROUPS_CLAIM ?? null,
    adminGroups: list(e.ZHINIAN_ADMIN_GROUPS),
    viewerGroups: list(e.ZHINIAN_VIEWER_GROUPS),
    sessionSecret: e.ZHINIAN_SESSION_SECRET ?? null,
    sessionTtlMs: e.ZHINIAN_SESSION_TTL_SECONDS * 1000,
  };
}

/** Where asset bytes live: `<dataDir>/assets`, or a bucket when `ZHINIAN_S3_BUCKET` is set. */
type StorageConfig = { kind: 'local' } | S3StorageConfig;

export interface S3StorageConfig {
  kind: 's3';
  bucket: string;
  /** null: AWS itself, from the region. */
  endpoint: string | null;
  region: string;
  /** Both null: the SDK's default credential chain (env, shared files, instance role). */
  accessKeyId: string | null;
  secretAccessKey: string | null;
  /** `<endpoint>/<bucket>/<key>` instead of `<bucket>.<endpoint>/<key>` (MinIO and most self-hosted servers). */
  forcePathStyle: boolean;
  /** Downloads answer 302 to a presigned URL instead of streaming through the API. */
  presign: boolean;
  /** Prepended to every object key (`zhinian/` keeps a shared bucket tidy). */
  prefix: string | null;
}

function storageFromEnv(e: z.infer<typeof envSchema>): StorageConfig {
  const problems: string[] = [];
  if (!e.ZHINIAN_S3_ACCESS_KEY_ID !== !e.ZHINIAN_S3_SECRET_ACCESS_KEY) {
    problems.push('  ZHINIAN_S3_ACCESS_KEY_ID, ZHINIAN_S3_SECRET_ACCESS_KEY: set both or neither');
  }
  if (!e.ZHINIAN_S3_BUCKET && (e.ZHINIAN_S3_ENDPOINT || e.ZHINIAN_S3_PRESIGN || e.ZHINIAN_S3_ACCESS_KEY_ID || e.ZHINIAN_S3_PREFIX)) {
    problems.push('  ZHINIAN_S3_BUCKET: required when other ZHINIAN_S3_* settings are given');
  }
  if (problems.length > 0) throw new ConfigError(`Invalid configuration:\n${problems.join('\n')}`);
  if (!e.ZHINIAN_S3_BUCKET) return { kind: 'local' };
  return {
    kind: 's3',
    bucket: e.ZHINIAN_S3_BUCKET,
    endpoint: e.ZHINIAN_S3_ENDPOINT ?? null,
    region: e.ZHINIAN_S3_REGION,
    accessKeyId: e.ZHINIAN_S3_ACCESS_KEY_ID ?? null,
    secretAccessKey: e.ZHINIAN_S3_SECRET_ACCESS_KEY ?? null,
    forcePathStyle: e.ZHINIAN_S3_FORCE_PATH_STYLE,
    presign: e.ZHINIAN_S3_PRESIGN,
    prefix: e.ZHINIAN_S3_PREFIX ?? null,
  };
}

interface ProvidersConfig {
  httpTimeoutMs: number;
  /** Overrides every provider's poll cadence (tests). */
  pollIntervalMs: number | null;
  jimeng: { baseUrl: string; accessKeyId: string; secretAccessKey: string; securityToken: string | null; region: string; imageReqKey: string; maxConcurrency: number } | null;
  seedance: { baseUrl: string; apiKey: string; videoModel: string; maxConcurrency: number } | null;
  evolink: { baseUrl: string; apiKey: string; imageModel: string; maxConcurrency: number } | null;
}

export class ConfigError extends Error {}

/** Reads the environment once; reports every problem together. */
export function loadConfig(env: Env): Readonly<Config> {
  const clean = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = envSchema.safeParse(clean);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  return Object.freeze({
    http: { port: e.PORT, host: e.HOST, publicBaseUrl: e.ZHINIAN_PUBLIC_BASE_URL?.replace(/\/+$/, '') ?? null },
    dataDir: path.resolve(e.ZHINIAN_DATA_DIR),
    databaseUrl: e.DATABASE_URL ?? null,
    dbPoolMax: e.ZHINIAN_DB_POOL_MAX,
    apiKeys: e.ZHINIAN_API_KEYS ?? null,
    webhookSecret: e.ZHINIAN_WEBHOOK_SECRET ?? null,
    allowPrivateUrls: e.ZHINIAN_ALLOW_PRIVATE_URLS,
    maxUploadBytes: e.ZHINIAN_MAX_UPLOAD_BYTES,
    queueTtlMs: e.ZHINIAN_QUEUE_TTL_SECONDS * 1000,
    jobTimeoutMs: e.ZHINIAN_JOB_TIMEOUT_SECONDS * 1000,
    leaseMs: e.ZHINIAN_JOB_LEASE_SECONDS * 1000,
    maxAttempts: e.ZHINIAN_MAX_ATTEMPTS,
    rateLimitJobsPerMinute: e.ZHINIAN_RATE_LIMIT_JOBS_PER_MINUTE,
    rateLimitRequestsPerMinute: e.ZHINIAN_RATE_LIMIT_REQUESTS_PER_MINUTE,
    clientMaxRunning: e.ZHINIAN_CLIENT_MAX_RUNNING,
    workerConcurrency: e.ZHINIAN_WORKER_CONCURRENCY,
    pollIntervalMs: e.ZHINIAN_POLL_INTERVAL_MS,
    maxInputPixels: e.ZHINIAN_MAX_INPUT_PIXELS,
    requestTimeoutMs: e.ZHINIAN_REQUEST_TIMEOUT_SECONDS * 1000,
    shutdownGraceMs: e.ZHINIAN_SHUTDOWN_GRACE_SECONDS * 1000,
    logLevel: e.LOG_LEVEL,
    signingSecret: e.ZHINIAN_SIGNING_SECRET ?? null,
    signedUrlTtlSeconds: e.ZHINIAN_SIGNED_URL_TTL_SECONDS,
    remoteConcurrency: e.ZHINIAN_REMOTE_CONCURRENCY,
    providers: {
      httpTimeoutMs: e.ZHINIAN_PROVIDER_HTTP_TIMEOUT_MS,
      pollIntervalMs: e.ZHINIAN_PROVIDER_POLL_INTERVAL_MS ?? null,
      jimeng:
        e.ZHINIAN_VOLC_ACCESS_KEY_ID && e.ZHINIAN_VOLC_SECRET_ACCESS_KEY
          ? {
              baseUrl: e.ZHINIAN_JIMENG_BASE_URL,
              accessKeyId: e.ZHINIAN_VOLC_ACCESS_KEY_ID,
              secretAccessKey: e.ZHINIAN_VOLC_SECRET_ACCESS_KEY,
              securityToken: e.ZHINIAN_VOLC_SECURITY_TOKEN ?? null,
              region: e.ZHINIAN_VOLC_REGION,
              imageReqKey: e.ZHINIAN_JIMENG_IMAGE_REQ_KEY,
              maxConcurrency: e.ZHINIAN_JIMENG_MAX_CONCURRENCY,
            }
          : null,
      seedance: e.ZHINIAN_ARK_API_KEY
        ? { baseUrl: e.ZHINIAN_ARK_BASE_URL, apiKey: e.ZHINIAN_ARK_API_KEY, videoModel: e.ZHINIAN_ARK_VIDEO_MODEL, maxConcurrency: e.ZHINIAN_ARK_MAX_CONCURRENCY }
        : null,
      evolink: e.ZHINIAN_EVOLINK_API_KEY
        ? { baseUrl: e.ZHINIAN_EVOLINK_BASE_URL, apiKey: e.ZHINIAN_EVOLINK_API_KEY, imageModel: e.ZHINIAN_EVOLINK_IMAGE_MODEL, maxConcurrency: e.ZHINIAN_EVOLINK_MAX_CONCURRENCY }
        : null,
    },
    enginePreference: Object.fromEntries(
      (
        [
          ['image.generate', e.ZHINIAN_ENGINES_IMAGE_GENERATE],
          ['image.inpaint', e.ZHINIAN_ENGINES_IMAGE_INPAINT],
          ['image.upscale', e.ZHINIAN_ENGINES_IMAGE_UPSCALE],
          ['video.generate', e.ZHINIAN_ENGINES_VIDEO_GENERATE],
        ] as const
      )
        .filter(([, list]) => list !== undefined)
        .map(([capability, list]) => [
          capability,
          list!
            .split(',')
            .map((n) => n.trim())
            .filter(Boolean),
        ]),
    ),
    storage: storageFromEnv(e),
    console: consoleFromEnv(e),
  });
}

/** `clientId:key,clientId:key` — a client may have several keys; a key belongs to one client. */
export function parseApiKeys(value: string): ApiKey[] {
  const keys: ApiKey[] = [];
  for (const part of value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const colon = part.indexOf(':');
    const clientId = part.slice(0, colon).trim();
    const key = part.slice(colon + 1).trim();
    if (colon <= 0 || !key) throw new ConfigError(`ZHINIAN_API_KEYS: "${part}" is not clientId:key`);
    if (keys.some((k) => k.key === key)) throw new ConfigError(`ZHINIAN_API_KEYS: a key is listed twice`);
    keys.push({ clientId, key });
  }
  if (keys.length === 0) throw new ConfigError('ZHINIAN_API_KEYS: no keys given');
  return keys;
}

/** The base of URLs handed out, when none is configured. */
export function publicBaseUrl(config: Config, listeningPort?: number): string {
  if (config.http.publicBaseUrl) return config.http.publicBaseUrl;
  const host = config.http.host.includes(':') ? `[${config.http.host}]` : config.http.host;
  return `http://${host}:${listeningPort ?? config.http.port}`;
}
