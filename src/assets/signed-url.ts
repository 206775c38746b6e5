import { createHmac, timingSafeEqual } from 'node:crypto';
import { assetDownloadPath } from './repo.ts';

/**
 * Short-lived download links that need no API key, for remote engines to fetch our assets:
 * `/api/v1/assets/<id>/download?expires=<unix s>&signature=<hex HMAC-SHA256("<id>.<expires>")>`.
 * Changing the id or the expiry breaks the signature; the link dies at `expires`.
 */
export interface UrlSigner {
  sign(assetId: string, ttlSeconds: number, nowMs?: number): { expires: number; signature: string };
  /** The path of a signed download link: `/api/v1/assets/<id>/download?expires=…&signature=…`. */
  signedDownloadPath(assetId: string, ttlSeconds: number, nowMs?: number): string;
  /** True when the pair is authentic and not yet expired. */
  verify(assetId: string, expires: string | undefined, signature: string | undefined, nowMs?: number): boolean;
}

export function createUrlSigner(secret: string): UrlSigner {
  const mac = (assetId: string, expires: number) => createHmac('sha256', secret).update(`${assetId}.${expires}`).digest('hex');
  return {
    sign(assetId, ttlSeconds, nowMs = Date.now()) {
      const expires = Math.floor(nowMs / 1000) + ttlSeconds;
      return { expires, signature: mac(assetId, expires) };
    },
    signedDownloadPath(assetId, ttlSeconds, nowMs) {
      const { expires, signature } = this.sign(assetId, ttlSeconds, nowMs);
      return `${assetDownloadPath(assetId)}?expires=${expires}&signature=${signature}`;
    },
    verify(assetId, expires, signature, nowMs = Date.now()) {
      if (!expires || !signature || !/^\d{1,12}$/.test(expires) || !/^[0-9a-f]{64}$/.test(signature)) return false;
      const at = Number(expires);
      if (at * 1000 <= nowMs) return false;
      return timingSafeEqual(Buffer.from(mac(assetId, at), 'hex'), Buffer.from(signature, 'hex'));
    },
  };
}
