import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { sendError } from '../api/errors.ts';
import { type ApiErrorCode, ERR, httpStatus } from '../lib/error-codes.ts';
import type { ConsoleDeps } from './deps.ts';
import { createOidcClient, type OidcClient, OidcError, type OidcFlow } from './oidc.ts';
import { actorOf, roleFor } from './roles.ts';
import { CONSOLE_PATH, csrfMatches, type ConsoleUser } from './session.ts';

/** The sign-in flow's own cookie (state, nonce, PKCE verifier), signed, for 10 minutes, only on /admin/auth. */
const FLOW_COOKIE = 'zhinian_oidc';
const FLOW_PATH = `${CONSOLE_PATH}/auth`;
const FLOW_MAX_AGE_S = 600;

/** The one-time link page's cookie, repeated by its form (only that form may spend the token). */
const LINK_COOKIE = 'zhinian_link';
const LINK_PATH = `${CONSOLE_PATH}/login`;
/** A link token as login-tokens.ts makes them (32 random bytes, base64url). */
const LINK_TOKEN = /^[A-Za-z0-9_-]{16,128}$/;

/** Who a one-time sign-in link signs in. */
const LOCAL_ADMIN: ConsoleUser = { email: 'admin@localhost', name: 'Local admin', role: 'admin' };

const PUBLIC = { config: { access: 'console-public' as const } };

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A small page of its own (no script, no inline style: the console's CSP holds). */
function sendPage(
  reply: FastifyReply,
  status: number,
  title: string,
  paragraphs: string[],
  link?: { href: string; label: string },
  form?: { action: string; fields: Record<string, string>; label: string },
) {
  const formHtml = form
    ? `<form method="post" action="${escapeHtml(form.action)}">${Object.entries(form.fields)
        .map(([k, v]) => `<input type="hidden" name="${escapeHtml(k)}" value="${escapeHtml(v)}">`)
        .join('')}<button type="submit" data-test="link-sign-in">${escapeHtml(form.label)}</button></form>`
    : '';
  const body = [...paragraphs.map((p) => `<p>${escapeHtml(p)}</p>`), ...(link ? [`<p><a href="${escapeHtml(link.href)}">${escapeHtml(link.label)}</a></p>`] : []), formHtml].join(
    '\n',
  );
  return reply
    .status(status)
    .header('cache-control', 'no-store')
    .type('text/html; charset=utf-8')
    .send(
      `<!doctype html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>${escapeHtml(title)} · 智念</title>\n<link rel="stylesheet" href="${CONSOLE_PATH}/static/console.css">\n</head>\n<body>\n<main>\n<h1>${escapeHtml(title)}</h1>\n${body}\n</main>\n</body>\n</html>\n`,
    );
}

function readFlow(request: FastifyRequest): OidcFlow | null {
  const raw = request.cookies[FLOW_COOKIE];
  if (raw === undefined || raw.length > 2048) return null;
  const unsigned = request.unsignCookie(raw);
  if (!unsigned.valid || unsigned.value === null) return null;
  try {
    const flow = JSON.parse(unsigned.value) as Partial<OidcFlow>;
    if (typeof flow.state !== 'string' || typeof flow.nonce !== 'string' || typeof flow.codeVerifier !== 'string') return null;
    return { state: flow.state, nonce: flow.nonce, codeVerifier: flow.codeVerifier };
  } catch {
    return null;
  }
}

/**
 * A refused sign-in: a page for a browser (it navigated here), `{ error, code }` for anything
 * else (as on /api/v1), with the catalogue's status either way.
 */
function refuse(request: FastifyRequest, reply: FastifyReply, code: ApiErrorCode, message: string) {
  const accept = request.headers.accept ?? '';
  if (!/\btext\/html\b/.test(accept)) return sendError(reply, code, message);
  return sendPage(reply, httpStatus(code), 'Sign-in refused / 登录被拒绝', [message, `(${code})`], { href: `${CONSOLE_PATH}/auth/login`, label: 'Sign in again / 重新登录' });
}

const clearFlow = (reply: FastifyReply) => reply.clearCookie(FLOW_COOKIE, { path: FLOW_PATH });

/** Sign-in and sign-out: OIDC (`/auth/login`, `/auth/callback`), one-time links (`/login`), `/auth/logout`. */
export function registerAuthRoutes(admin: FastifyInstance, deps: ConsoleDeps): void {
  const consoleConfig = deps.config.console;
  const redirectUri = () => `${deps.baseUrl()}${CONSOLE_PATH}/auth/callback`;
  const oidc: OidcClient | null = consoleConfig.oidc ? createOidcClient({ oidc: consoleConfig.oidc, groupsClaim: consoleConfig.groupsClaim, redirectUri }) : null;

  const unavailable = (reply: FastifyReply, error: OidcError) => {
    admin.log.warn({ err: error.cause ?? error }, 'console sign-in: identity provider unreachable');
    return sendPage(reply, 503, 'Sign-in unavailable / 暂时无法登录', [
      'The identity provider cannot be reached right now. Try again in a moment.',
      '暂时无法连接身份提供方，请稍后再试。',
    ]);
  };

  admin.get('/auth/login', PUBLIC, async (_request, reply) => {
    if (!oidc) {
      return sendPage(reply, 200, 'Sign in / 登录', [
        'This console signs in with a one-time link: npm start prints one when it starts, and npm run admin-link prints a fresh one (valid 15 minutes, single use).',
        '本控制台使用一次性登录链接：npm start 启动时会打印一个，npm run admin-link 可随时生成新的链接（15 分钟内有效，仅可使用一次）。',
      ]);
    }
    try {
      const { url, flow } = await oidc.start();
      reply.setCookie(FLOW_COOKIE, JSON.stringify(flow), {
        signed: true,
        httpOnly: true,
        sameSite: 'lax',
        path: FLOW_PATH,
        secure: deps.sessions.secure,
        maxAge: FLOW_MAX_AGE_S,
      });
      return reply.header('cache-control', 'no-store').redirect(url, 302);
    } catch (error) {
      if (error instanceof OidcError) return unavailable(reply, error);
      throw error;
    }
  });

  admin.get('/auth/callback', PUBLIC, async (request, reply) => {
    reply.header('cache-control', 'no-store');
    if (!oidc) return refuse(request, reply, ERR.not_found, 'Single sign-on is not configured (ZHINIAN_OIDC_ISSUER is unset).');
    const query = request.query as Record<string, unknown>;
    const flow = readFlow(request);
    if (!flow) return refuse(request, reply, ERR.invalid_request, 'The sign-in flow is missing or was tampered with; start again at /admin/auth/login.');
    clearFlow(reply);
    if (typeof query.error === 'string') {
      const description = typeof query.error_description === 'string' ? `: ${query.error_description.slice(0, 200)}` : '';
      return refuse(request, reply, ERR.invalid_request, `The identity provider refused the sign-in (${query.error.slice(0, 100)}${description}).`);
    }
    if (typeof query.state !== 'string' || !csrfMatches(query.state, flow.state)) {
      return refuse(request, reply, ERR.invalid_request, 'The sign-in response does not belong to this sign-in (state mismatch); start again at /admin/auth/login.');
    }
    const search = request.url.includes('?') ? request.url.slice(request.url.indexOf('?')) : '';
    let identity: Awaited<ReturnType<OidcClient['finish']>>;
    try {
      identity = await oidc.finish(new URL(redirectUri() + search), flow);
    } catch (error) {
      if (error instanceof OidcError && error.kind === 'unavailable') return unavailable(reply, error);
      request.log.info({ err: error }, 'console sign-in refused');
      const message = error instanceof OidcError ? error.message : 'The sign-in response could not be validated.';
      return refuse(request, reply, ERR.invalid_request, message.slice(0, 300));
    }
    const role = roleFor(identity, consoleConfig);
    if (!role) {
      request.log.info({ email: identity.email }, 'console sign-in: no role');
      return refuse(
        request,
        reply,
        ERR.forbidden,
        `${identity.email ?? 'This account'} has no role in this console (ZHINIAN_ADMIN_EMAILS, ZHINIAN_VIEWER_EMAILS or the groups settings).`,
      );
    }
    const { name, ...grantedIdentity } = identity;
    await deps.sessions.start(reply, { email: actorOf(identity, consoleConfig), name, role }, { via: 'oidc', identity: grantedIdentity });
    return reply.redirect(CONSOLE_PATH, 302);
  });

  /**
   * A one-time link opens a page; only its form's POST spends the token, so a link preview or a
   * mail scanner fetching the URL (GET or HEAD) leaves it working. The page sets a short-lived
   * SameSite=Strict cookie whose value the form repeats: a POST from any other page (a login
   * CSRF planting the attacker's session) lacks it.
   */
  admin.get('/login', PUBLIC, async (request, reply) => {
    reply.header('cache-control', 'no-store').header('referrer-policy', 'no-referrer');
    if (oidc) return refuse(request, reply, ERR.forbidden, 'Sign-in links are off: this console signs in through single sign-on (/admin/auth/login).');
    const token = (request.query as Record<string, unknown>).token;
    if (typeof token !== 'string' || !LINK_TOKEN.test(token) || !(await deps.loginTokens.peek(token))) {
      return refuse(request, reply, ERR.unauthorized, 'This sign-in link is invalid, used or expired; npm run admin-link prints a fresh one.');
    }
    const nonce = randomBytes(18).toString('base64url');
    reply.setCookie(LINK_COOKIE, nonce, { signed: true, httpOnly: true, sameSite: 'strict', path: LINK_PATH, secure: deps.sessions.secure, maxAge: FLOW_MAX_AGE_S });
    return sendPage(
      reply,
      200,
      '登录控制台 · Sign in to the console',
      ['点击下方按钮登录（此链接仅可使用一次）。', 'Press the button to sign in (this link works once).'],
      undefined,
      {
        action: LINK_PATH,
        fields: { token, nonce },
        label: '登录 · Sign in',
      },
    );
  });

  admin.post('/login', { ...PUBLIC, bodyLimit: 4096 }, async (request, reply) => {
    reply.header('cache-control', 'no-store');
    if (oidc) return refuse(request, reply, ERR.forbidden, 'Sign-in links are off: this console signs in through single sign-on (/admin/auth/login).');
    const body = (request.body ?? {}) as Record<string, unknown>;
    const cookie = request.cookies[LINK_COOKIE];
    const unsigned = cookie === undefined || cookie.length > 256 ? null : request.unsignCookie(cookie);
    reply.clearCookie(LINK_COOKIE, { path: LINK_PATH });
    if (!unsigned?.valid || unsigned.value === null || !csrfMatches(body.nonce, unsigned.value)) {
      return refuse(request, reply, ERR.forbidden, 'Open the sign-in link itself and press its button (this form did not come from it).');
    }
    if (typeof body.token !== 'string' || !(await deps.loginTokens.consume(body.token))) {
      return refuse(request, reply, ERR.unauthorized, 'This sign-in link is invalid, used or expired; npm run admin-link prints a fresh one.');
    }
    await deps.sessions.start(reply, LOCAL_ADMIN, { via: 'link' });
    return reply.redirect(CONSOLE_PATH, 303);
  });

  // Not straight to /auth/login: with SSO that would sign a user still signed in at the provider back in at once.
  admin.get('/auth/signed-out', PUBLIC, async (_request, reply) =>
    sendPage(reply, 200, '已退出 · Signed out', ['您已退出控制台。', 'You have signed out of the console.'], {
      href: `${CONSOLE_PATH}/auth/login`,
      label: '重新登录 · Sign in again',
    }),
  );

  admin.post('/auth/logout', PUBLIC, async (request, reply) => {
    const session = request.consoleSession;
    if (session) {
      if (!csrfMatches(request.headers['x-csrf-token'], session.csrfToken)) {
        return sendError(reply, ERR.forbidden, 'Missing or wrong X-CSRF-Token (GET /admin/api/me gives it).');
      }
      await deps.sessions.end(request, reply);
    }
    return reply.header('hx-redirect', `${CONSOLE_PATH}/auth/signed-out`).status(204).send();
  });
}
