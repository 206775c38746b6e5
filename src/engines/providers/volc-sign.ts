/**
 * Volcengine V4 request signing (HMAC-SHA256), docs/providers.md §2.2, and the matching verifier the
 * fake provider uses. Unlike AWS SigV4 the key chain starts from the raw secret (no "AWS4"
 * prefix, never base64-decoded) and the scope ends in "request".
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

const VOLC_ALGORITHM = 'HMAC-SHA256';

export interface VolcSignInput {
  method: string;
  /** As sent: default port dropped, others kept (`new URL(base).host`). */
  host: string;
  /** Canonical URI, e.g. `/`. */
  path: string;
  query: Record<string, string>;
  /** Extra headers to send and sign, e.g. `Content-Type` (names in any case). */
  headers: Record<string, string>;
  /** The exact bytes that will be sent: the body is serialised once, hashed and sent as is. */
  body: string | Buffer;
  accessKeyId: string;
  secretAccessKey: string;
  /** STS session token: sent and signed as `X-Security-Token`. */
  securityToken?: string;
  region: string;
  service: string;
  /** `YYYYMMDDTHHMMSSZ` or a Date; default now. */
  xDate?: string | Date;
}

/** Every intermediate value, so tests can check the published vectors step by step. */
export interface VolcSignature {
  canonicalRequest: string;
  canonicalRequestHash: string;
  stringToSign: string;
  signingKey: Buffer;
  signedHeaders: string;
  signature: string;
  credentialScope: string;
}

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

/** `20250101T000000Z` */
export function formatXDate(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
}

/** RFC 3986: only `A-Za-z0-9-_.~` stay literal; `encodeURIComponent` leaves `!'()*` alone. */
export function rfc3986Encode(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function canonicalQuery(query: Record<string, string>): string {
  return Object.keys(query)
    .sort()
    .map((name) => `${rfc3986Encode(name)}=${rfc3986Encode(query[name]!)}`)
    .join('&');
}

function canonicalUri(path: string): string {
  return path.split('/').map(rfc3986Encode).join('/') || '/';
}

function deriveSigningKey(secretAccessKey: string, date: string, region: string, service: string): Buffer {
  const kDate = hmac(Buffer.from(secretAccessKey, 'utf8'), date);
  const kRegion = hmac(kDate, region);
  const kService = hmac(kRegion, service);
  return hmac(kService, 'request');
}

/**
 * Signs a request given the exact headers to sign (lower-case names). `bodyHash` is what the
 * body hashes to; the verifier passes the client's claim only after checking it.
 */
export function computeVolcSignature(input: {
  method: string;
  path: string;
  query: Record<string, string>;
  signedHeaders: Record<string, string>;
  bodyHash: string;
  xDate: string;
  secretAccessKey: string;
  region: string;
  service: string;
}): VolcSignature {
  const names = Object.keys(input.signedHeaders).sort();
  const headerBlock = names.map((name) => `${name}:${input.signedHeaders[name]!.trim()}\n`).join('');
  const signedHeaders = names.join(';');
  const canonicalRequest = [input.method.toUpperCase(), canonicalUri(input.path), canonicalQuery(input.query), headerBlock, signedHeaders, input.bodyHash].join('\n');
  const canonicalRequestHash = sha256Hex(canonicalRequest);
  const date = input.xDate.slice(0, 8);
  const credentialScope = `${date}/${input.region}/${input.service}/request`;
  const stringToSign = [VOLC_ALGORITHM, input.xDate, credentialScope, canonicalRequestHash].join('\n');
  const signingKey = deriveSigningKey(input.secretAccessKey, date, input.region, input.service);
  const signature = createHmac('sha256', signingKey).update(stringToSign, 'utf8').digest('hex');
  return { canonicalRequest, canonicalRequestHash, stringToSign, signingKey, signedHeaders, signature, credentialScope };
}

/** The headers to send: the caller's, plus Host, X-Date, X-Content-Sha256, X-Security-Token and Authorization. */
export function signVolcRequest(input: VolcSignInput): Record<string, string> {
  // The real clock, not an injected one: the provider checks X-Date against its own time and
  // refuses a skewed signature, so this wire timestamp is the wall clock whatever a test clock says.
  const xDate = typeof input.xDate === 'string' ? input.xDate : formatXDate(input.xDate ?? new Date());
  const bodyHash = sha256Hex(input.body);
  const sent: Record<string, string> = {
    ...input.headers,
    Host: input.host,
    'X-Date': xDate,
    'X-Content-Sha256': bodyHash,
  };
  if (input.securityToken) sent['X-Security-Token'] = input.securityToken;
  const signedHeaders = Object.fromEntries(Object.entries(sent).map(([name, value]) => [name.toLowerCase(), value]));
  const signed = computeVolcSignature({ ...input, signedHeaders, bodyHash, xDate });
  sent.Authorization = `${VOLC_ALGORITHM} Credential=${input.accessKeyId}/${signed.credentialScope}, ` + `SignedHeaders=${signed.signedHeaders}, Signature=${signed.signature}`;
  return sent;
}

// ---------------------------------------------------------------------------------------------
// Verification (the fake provider's side)

export interface VolcSignedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  /** Lower-case names, as Node's IncomingMessage gives them. */
  headers: Record<string, string | string[] | undefined>;
  body: string | Buffer;
}

interface ParsedAuthorization {
  accessKeyId: string;
  date: string;
  region: string;
  service: string;
  signedHeaders: string[];
  signature: string;
}

export type VolcVerification = { ok: true; accessKeyId: string; region: string; service: string; signedHeaders: string[] } | { ok: false; reason: string };

const AUTHORIZATION = /^HMAC-SHA256 Credential=([^/,\s]+)\/(\d{8})\/([^/,\s]+)\/([^/,\s]+)\/request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/;

function parseVolcAuthorization(value: string): ParsedAuthorization | null {
  const m = AUTHORIZATION.exec(value.trim());
  if (!m) return null;
  return { accessKeyId: m[1]!, date: m[2]!, region: m[3]!, service: m[4]!, signedHeaders: m[5]!.split(';'), signature: m[6]! };
}

function headerValue(headers: VolcSignedRequest['headers'], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

/**
 * Rebuilds the signature from the client's own SignedHeaders list, as Volcengine does. Requires
 * `host` and `x-date` to be signed and `X-Content-Sha256` to match the body actually received.
 */
export function verifyVolcSignature(request: VolcSignedRequest, secretFor: (accessKeyId: string) => string | undefined): VolcVerification {
  const authorization = headerValue(request.headers, 'authorization');
  if (!authorization) return { ok: false, reason: 'missing Authorization' };
  const auth = parseVolcAuthorization(authorization);
  if (!auth) return { ok: false, reason: 'malformed Authorization' };
  const secret = secretFor(auth.accessKeyId);
  if (secret === undefined) return { ok: false, reason: 'unknown access key' };
  for (const required of ['host', 'x-date']) {
    if (!auth.signedHeaders.includes(required)) return { ok: false, reason: `${required} not signed` };
  }
  const xDate = headerValue(request.headers, 'x-date') ?? '';
  if (xDate.slice(0, 8) !== auth.date) return { ok: false, reason: 'credential date differs from X-Date' };
  const bodyHash = sha256Hex(request.body);
  if (headerValue(request.headers, 'x-content-sha256') !== bodyHash) return { ok: false, reason: 'X-Content-Sha256 does not match the body' };

  const signedHeaders: Record<string, string> = {};
  for (const name of auth.signedHeaders) {
    const value = headerValue(request.headers, name);
    if (value === undefined) return { ok: false, reason: `signed header ${name} missing` };
    signedHeaders[name] = value;
  }
  const expected = computeVolcSignature({
    method: request.method,
    path: request.path,
    query: request.query,
    signedHeaders,
    bodyHash,
    xDate,
    secretAccessKey: secret,
    region: auth.region,
    service: auth.service,
  });
  const matches = timingSafeEqual(Buffer.from(expected.signature, 'hex'), Buffer.from(auth.signature, 'hex'));
  if (!matches) return { ok: false, reason: 'signature does not match' };
  return { ok: true, accessKeyId: auth.accessKeyId, region: auth.region, service: auth.service, signedHeaders: auth.signedHeaders };
}
