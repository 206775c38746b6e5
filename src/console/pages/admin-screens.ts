import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ConsoleDeps } from '../deps.ts';
import { DEFAULT_LOCALE, isLocale, LANG_COOKIE, t } from '../i18n/index.ts';
import type { Render } from '../render.ts';
import { registerAuditPage } from './audit.ts';
import { registerClientPages } from './clients.ts';
import { registerUsagePages } from './usage.ts';
import { registerWebhookPage } from './webhooks.ts';

/** Clients & keys, webhooks, usage and audit screens. */
export function registerAdminScreens(admin: FastifyInstance, deps: ConsoleDeps, render: Render): void {
  registerClientPages(admin, deps, render);
  registerWebhookPage(admin, deps, render);
  registerUsagePages(admin, deps, render);
  registerAuditPage(admin, deps, render);
}

/** A page title in the viewer's locale (the same choice as render.ts's localeOf, without setting the cookie again). */
export function titleOf(request: FastifyRequest, key: string): string {
  const asked = (request.query as Record<string, unknown> | undefined)?.lang;
  const saved = request.cookies?.[LANG_COOKIE];
  return t(isLocale(asked) ? asked : isLocale(saved) ? saved : DEFAULT_LOCALE, key);
}
