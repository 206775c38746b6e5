import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from '../deps.ts';
import type { Render } from '../render.ts';

/** Clients & keys, webhooks, usage and audit screens (stub: another module owns it). */
export function registerAdminScreens(_admin: FastifyInstance, _deps: ConsoleDeps, _render: Render): void {}
