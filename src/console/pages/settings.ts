import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from '../deps.ts';
import type { Render } from '../render.ts';

export function registerSettingsPage(_admin: FastifyInstance, _deps: ConsoleDeps, _render: Render): void {}
