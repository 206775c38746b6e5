import { ERR } from '../../lib/error-codes.ts';
import type { FastifyInstance } from 'fastify';
import type { KeyView } from '../../clients/index.ts';
import { AppError } from '../../lib/errors.ts';
import type { ConsoleDeps } from '../deps.ts';
import { totalsBy, usageRows, usageTotalsByClient } from '../queries/usage.ts';
import type { Render } from '../render.ts';
import { titleOf } from './admin-screens.ts';

const DAY_MS = 86_400_000;

/** Usage of one client over the last 7 UTC days (today included): its rows and totals. */
async function lastWeek(deps: ConsoleDeps, clientId: string) {
  const today = Math.floor(deps.clock.now() / DAY_MS);
  const rows = await usageRows(deps.handle, { fromDay: today - 6, toDay: today, clientId });
  return { rows, byClient: totalsBy(rows, (r) => r.clientId) };
}

function keyState(key: KeyView, now: number): 'active' | 'revoked' | 'expired' {
  if (key.revokedAt) return 'revoked';
  if (key.expiresAt && Date.parse(key.expiresAt) <= now) return 'expired';
  return 'active';
}

/** A key as the views print it: no character of an env or generated key, not even through its id. */
function shownKey(key: KeyView, now: number) {
  const own = key.origin === 'console';
  return {
    id: own ? key.id : '',
    prefix: own ? key.prefix : '',
    origin: key.origin,
    state: keyState(key, now),
    createdAt: key.createdAt,
    // Never before its creation (a clock step, or a use recorded by another instance's clock).
    lastUsedAt: key.lastUsedAt && key.createdAt && key.lastUsedAt < key.createdAt ? key.createdAt : key.lastUsedAt,
    expiresAt: key.expiresAt,
    revokedAt: key.revokedAt,
  };
}

const latest = (values: (string | null)[]) =>
  values
    .filter((v): v is string => v !== null)
    .sort()
    .at(-1) ?? null;

/** `/admin/clients` (list, new client) and `/admin/clients/:id` (keys, settings, webhook secret, usage). Changes go through /admin/api/clients (deps.clientAdmin). */
export function registerClientPages(admin: FastifyInstance, deps: ConsoleDeps, render: Render): void {
  admin.get('/clients', async (request, reply) => {
    const now = deps.clock.now();
    const today = Math.floor(now / DAY_MS);
    const [clients, usage] = await Promise.all([deps.clientAdmin.list(), usageTotalsByClient(deps.handle, { fromDay: today - 6, toDay: today })]);
    return render(reply, request, 'clients', {
      nav: 'clients',
      title: titleOf(request, 'cl.title'),
      clients: clients.map((c) => {
        const keys = c.keys.map((k) => shownKey(k, now));
        return {
          id: c.id,
          name: c.name,
          source: c.source,
          disabled: c.disabled,
          generated: keys.some((k) => k.origin === 'generated'),
          sharesWebhookSecret: c.sharesWebhookSecret,
          activeKeys: keys.filter((k) => k.state === 'active').length,
          lastUsedAt: latest(keys.map((k) => k.lastUsedAt)),
          usage: usage.get(c.id) ?? null,
        };
      }),
    });
  });

  admin.get<{ Params: { id: string } }>('/clients/:id', async (request, reply) => {
    let client: Awaited<ReturnType<typeof deps.clientAdmin.get>>;
    try {
      client = await deps.clientAdmin.get(request.params.id);
    } catch (e) {
      if (e instanceof AppError && (e.code === ERR.not_found || e.code === ERR.invalid_request)) {
        reply.status(404);
        return render(reply, request, 'partials/not-found', { nav: 'clients', id: request.params.id });
      }
      throw e;
    }
    const now = deps.clock.now();
    const usage = await lastWeek(deps, client.id);
    const allowed = client.settings.allowedEngines;
    const engineNames = [...new Set([...deps.engines.all().map((e) => e.name), ...(allowed ?? [])])];
    return render(reply, request, 'client', {
      nav: 'clients',
      title: client.name,
      client: { ...client, keys: undefined },
      keys: client.keys.map((k) => shownKey(k, now)),
      keyOrigin: client.keys.some((k) => k.origin === 'generated') ? 'generated' : client.source === 'env' ? 'env' : 'console',
      engines: engineNames.map((name) => ({ name, checked: allowed === null || allowed.includes(name) })),
      allEngines: allowed === null,
      usageRows: usage.rows,
      usage: usage.byClient.get(client.id) ?? null,
    });
  });
}
