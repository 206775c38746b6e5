import type { FastifyReply } from 'fastify';
import { CONSOLE_PATH } from './session.ts';

/**
 * Every answer under /admin: no script, style, image or connection from anywhere but us, no
 * framing, no inline script (htmx runs with eval off; see views/layout.eta).
 */
const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "media-src 'self' blob:",
  "font-src 'self'",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

/** The console's security headers, on pages, JSON, 404s and errors alike. */
export function consoleSecurityHeaders(reply: FastifyReply): FastifyReply {
  return reply
    .header('content-security-policy', CONSOLE_CSP)
    .header('x-frame-options', 'DENY')
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'same-origin')
    .header('cross-origin-opener-policy', 'same-origin');
}

/** Whether a raw request URL is the console's (`/admin`, `/admin/…`, `/admin?…`), as routing would see it. */
function isConsoleUrl(url: string | undefined): boolean {
  if (!url?.startsWith(CONSOLE_PATH)) return false;
  const next = url.charAt(CONSOLE_PATH.length);
  return next === '' || next === '/' || next === '?' || next === '#';
}

/**
 * The console's headers on an answer refused before routing (bad percent-encoding under /admin):
 * the app's `preRoutingHeaders` (api/app.ts), since such an answer runs none of the console's hooks.
 */
export function consolePreRoutingHeaders(rawUrl: string | undefined, reply: FastifyReply): void {
  if (isConsoleUrl(rawUrl)) consoleSecurityHeaders(reply);
}
