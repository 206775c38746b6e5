import type { FastifyReply, FastifyRequest } from 'fastify';
import { ERROR_CODES } from '../lib/error-codes.ts';
import { maskCredentials, maskUrlsIn } from './mask.ts';
import { DEFAULT_LOCALE, isLocale, LANG_COOKIE, type Locale, type Translate, translator } from './i18n/index.ts';
import { CONSOLE_PATH } from './session.ts';

/** The screens of the top navigation: key (also the `nav` a page passes), path, label key. */
const NAV = [
  { key: 'overview', path: `${CONSOLE_PATH}`, label: 'nav.overview' },
  { key: 'jobs', path: `${CONSOLE_PATH}/jobs`, label: 'nav.jobs' },
  { key: 'assets', path: `${CONSOLE_PATH}/assets`, label: 'nav.assets' },
  { key: 'clients', path: `${CONSOLE_PATH}/clients`, label: 'nav.clients' },
  { key: 'webhooks', path: `${CONSOLE_PATH}/webhooks`, label: 'nav.webhooks' },
  { key: 'engines', path: `${CONSOLE_PATH}/engines`, label: 'nav.engines' },
  { key: 'usage', path: `${CONSOLE_PATH}/usage`, label: 'nav.usage' },
  { key: 'audit', path: `${CONSOLE_PATH}/audit`, label: 'nav.audit' },
  { key: 'sessions', path: `${CONSOLE_PATH}/sessions`, label: 'nav.sessions' },
  { key: 'settings', path: `${CONSOLE_PATH}/settings`, label: 'nav.settings' },
] as const;

type NavKey = (typeof NAV)[number]['key'];

/** What every view gets beside its own data (as `it.<name>`). */
interface CommonData {
  user: { email: string; name: string; role: 'admin' | 'viewer' } | null;
  csrfToken: string;
  locale: Locale;
  t: Translate;
  nav: NavKey | null;
  navItems: typeof NAV;
  /** The page's path and query without `lang`, for the language links. */
  here: string;
  /** Whether the signed-in user may change things (role admin). */
  canChange: boolean;
  /** An ISO time as `<time>` markup (console.js shows it in the viewer's locale); '—' for null. Raw HTML: print with `<%~ %>`. */
  time: (iso: string | null | undefined) => string;
  /** JSON, pretty-printed, credentials in URLs masked (print escaped, with `<%= %>`). */
  json: (value: unknown) => string;
  /** A URL with its credentials masked (user:pass@, token-like query parameters); see mask.ts. */
  mask: (url: string | null | undefined) => string;
  /** Builds a query string from `params` (empty values dropped), e.g. for paging links. */
  qs: (params: Record<string, string | number | null | undefined>) => string;
  /** A duration in milliseconds, short ("850 ms", "12.3 s", "4 min 05 s", "2 h 10 min"); '—' for null. */
  duration: (ms: number | null | undefined) => string;
  /** A byte count ("1.2 MB"). */
  bytes: (n: number | null | undefined) => string;
  /** A share 0–1 as a percentage ("12.5%"); '—' for null. */
  percent: (share: number | null | undefined) => string;
  /** The strings console.js shows (error codes, confirmations), as JSON for a data attribute. */
  messages: string;
}

/** Codes an API answer can carry: each has an `error.<code>` string. */
export const API_ERROR_CODES = Object.entries(ERROR_CODES)
  .filter(([, entry]) => entry.kind === 'api' || entry.kind === 'both')
  .map(([code]) => code);

function messagesFor(t: Translate): string {
  return JSON.stringify({
    failed: t('shell.actionFailed'),
    failedLine: t('shell.failedLine'),
    done: t('shell.done'),
    field: t('shell.field'),
    detail: t('shell.detail'),
    network: t('shell.networkError'),
    other: t('error.other'),
    errors: Object.fromEntries(API_ERROR_CODES.map((code) => [code, t(`error.${code}`)])),
  });
}

/**
 * Renders `view` (a file under views/, without `.eta`) inside views/layout.eta. `data` is
 * passed as `it`, together with CommonData; `data.title` (already translated) names the page
 * and `data.nav` picks the highlighted navigation item.
 */
export type Render = (reply: FastifyReply, request: FastifyRequest, view: string, data: { nav?: NavKey | null; title?: string; [key: string]: unknown }) => Promise<FastifyReply>;

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The viewer's locale: `?lang=` (remembered in a cookie), else the cookie, else zh-CN. */
function localeOf(request: FastifyRequest, reply: FastifyReply): Locale {
  const asked = (request.query as Record<string, unknown> | undefined)?.lang;
  if (isLocale(asked)) {
    reply.setCookie(LANG_COOKIE, asked, { path: CONSOLE_PATH, sameSite: 'lax', httpOnly: false, maxAge: 365 * 24 * 3600 });
    return asked;
  }
  const saved = request.cookies?.[LANG_COOKIE];
  return isLocale(saved) ? saved : DEFAULT_LOCALE;
}

function qs(params: Record<string, string | number | null | undefined>): string {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') search.set(k, String(v));
  const s = search.toString();
  return s ? `?${s}` : '';
}

function commonData(request: FastifyRequest, reply: FastifyReply, nav: NavKey | null = null): CommonData {
  const locale = localeOf(request, reply);
  const session = request.consoleSession;
  const url = new URL(request.url, 'http://x');
  url.searchParams.delete('lang');
  const search = url.searchParams.toString();
  const translate = translator(locale);
  return {
    user: session ? session.user : null,
    csrfToken: session?.csrfToken ?? '',
    locale,
    t: translate,
    messages: messagesFor(translate),
    nav,
    navItems: NAV,
    here: `${url.pathname}${search ? `?${search}&` : '?'}`,
    canChange: session?.user.role === 'admin',
    time: (value) => (value ? `<time datetime="${escapeHtml(value)}">${escapeHtml(value)}</time>` : '—'),
    json: (value) => JSON.stringify(maskUrlsIn(value), null, 2),
    mask: (url) => (url ? maskCredentials(url) : '—'),
    qs,
    duration: formatDuration,
    bytes: formatBytes,
    percent: (share) => (share === null || share === undefined || !Number.isFinite(share) ? '—' : `${(share * 100).toFixed(share < 0.1 && share > 0 ? 1 : 0)}%`),
  };
}

function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(Math.floor(s % 60)).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export const render: Render = async (reply, request, view, data) => {
  const common = commonData(request, reply, data.nav ?? null);
  const it = { ...common, ...data };
  const body = await reply.viewAsync(view, it);
  const html = await reply.viewAsync('layout', { ...it, body });
  return reply.type('text/html; charset=utf-8').send(html);
};

/** A fragment (no layout), e.g. a table row htmx swaps in. */
export async function renderFragment(reply: FastifyReply, request: FastifyRequest, view: string, data: object): Promise<FastifyReply> {
  const it = { ...commonData(request, reply), ...data };
  return reply.type('text/html; charset=utf-8').send(await reply.viewAsync(view, it));
}
