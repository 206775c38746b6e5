import path from 'node:path';
import fastifyView from '@fastify/view';
import { Eta } from 'eta';
import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from './deps.ts';
import { consoleDir } from './files.ts';
import { registerAdminScreens } from './pages/admin-screens.ts';
import { registerAssetPages } from './pages/assets.ts';
import { registerEnginePages } from './pages/engines.ts';
import { registerJobPages } from './pages/jobs.ts';
import { registerOverview } from './pages/overview.ts';
import { registerSessionsPage } from './pages/sessions.ts';
import { registerSettingsPage } from './pages/settings.ts';
import { render } from './render.ts';

/**
 * The console's HTML screens: read-only GET pages rendered on the server (Eta, auto-escaped),
 * in a child context of /admin that holds the view engine. Changes go through the JSON API
 * (console.js posts it with the CSRF header).
 */
export function registerPages(admin: FastifyInstance, deps: ConsoleDeps): void {
  admin.register(async (pages) => {
    await pages.register(fastifyView, {
      engine: { eta: new Eta({ autoEscape: true, autoTrim: false, cache: true }) },
      root: path.join(consoleDir, 'views'),
      production: true,
    });
    registerOverview(pages, deps, render);
    registerJobPages(pages, deps, render);
    registerAssetPages(pages, deps, render);
    registerEnginePages(pages, deps, render);
    registerSettingsPage(pages, deps, render);
    registerAdminScreens(pages, deps, render);
    registerSessionsPage(pages, deps, render);
  });
}
