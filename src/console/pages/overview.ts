import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from '../deps.ts';
import type { Render } from '../render.ts';

export function registerOverview(admin: FastifyInstance, _deps: ConsoleDeps, render: Render): void {
  admin.get('/', async (request, reply) => render(reply, request, 'overview', { nav: 'overview', title: request.url }));
}
