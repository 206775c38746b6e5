import { createHmac } from 'node:crypto';

/** `X-Zhinian-Signature` value: `sha256=` + hex HMAC-SHA256 of the exact raw body, the secret's UTF-8 bytes as key. */
function signPayload(secret: string, rawBody: string | Buffer): string {
  return `sha256=${createHmac('sha256', secret).update(rawBody).digest('hex')}`;
}

/**
 * Standard Webhooks (standardwebhooks.com) `webhook-signature` entry: `v1,` + base64 HMAC-SHA256
 * of `{id}.{timestamp}.{body}`. A `whsec_<base64>` secret is base64-decoded, as that spec says;
 * any other secret is used as its UTF-8 bytes.
 */
function signStandard(secret: string, id: string, timestampSeconds: number, rawBody: string): string {
  const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice('whsec_'.length), 'base64') : Buffer.from(secret, 'utf8');
  return `v1,${createHmac('sha256', key).update(`${id}.${timestampSeconds}.${rawBody}`).digest('base64')}`;
}

/**
 * The signing headers of one attempt: one signature per secret, space-separated, so a
 * receiver that knows either secret of a rotation accepts it.
 */
export function signatureHeaders(secrets: string[], id: string, timestampSeconds: number, rawBody: string): Record<string, string> {
  const headers: Record<string, string> = { 'webhook-id': id, 'webhook-timestamp': String(timestampSeconds) };
  if (secrets.length === 0) return headers;
  headers['x-zhinian-signature'] = secrets.map((secret) => signPayload(secret, rawBody)).join(' ');
  headers['webhook-signature'] = secrets.map((secret) => signStandard(secret, id, timestampSeconds, rawBody)).join(' ');
  return headers;
}
