import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Actor } from '../../clients/index.ts';
import type { ConsoleDeps } from '../deps.ts';

/** The signed-in user making a change (the guard let only sessions through). */
export const actorOf = (request: FastifyRequest): Actor => ({ email: request.consoleSession!.user.email });

/** Clients and keys (CONTRACT "Browser console"): secrets appear in these answers once and nowhere else. */
export function registerClientApi(admin: FastifyInstance, deps: ConsoleDeps): void {
  const clients = deps.clientAdmin;
  admin.get('/api/clients', async () => ({ clients: await clients.list() }));
  admin.post('/api/clients', async (request, reply) => reply.status(201).send(await clients.create(actorOf(request), request.body)));
  admin.get<{ Params: { id: string } }>('/api/clients/:id', async (request) => ({ client: await clients.get(request.params.id) }));
  admin.patch<{ Params: { id: string } }>('/api/clients/:id', async (request) => clients.update(actorOf(request), request.params.id, request.body));
  admin.post<{ Params: { id: string } }>('/api/clients/:id/keys', async (request, reply) =>
    reply.status(201).send(await clients.createKey(actorOf(request), request.params.id, request.body)),
  );
  admin.post<{ Params: { id: string } }>('/api/clients/:id/webhook-secret', async (request, reply) =>
    reply.status(201).send(await clients.rotateWebhookSecret(actorOf(request), request.params.id)),
  );
  admin.post<{ Params: { keyId: string } }>('/api/keys/:keyId/revoke', async (request) => clients.revokeKey(actorOf(request), request.params.keyId));
}
