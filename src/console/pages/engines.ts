import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from '../deps.ts';
import { engineViews } from '../queries/engines.ts';
import type { Render } from '../render.ts';

export function registerEnginePages(admin: FastifyInstance, deps: ConsoleDeps, render: Render): void {
  admin.get('/engines', async (request, reply) => {
    const engines = await engineViews(deps.handle, deps.engines, deps.clock.now());
    return render(reply, request, 'engines', { nav: 'engines', engines });
  });
}
