import { createHmac } from 'node:crypto';

/** `X-Zhinian-Signature` value: `sha256=` + hex HMAC-SHA256 of the exact raw body. */
export function signPayload(secret: string, rawBody: string | Buffer): string {
  return `sha256=${createHmac('sha256', secret).update(rawBody).digest('hex')}`;
}
