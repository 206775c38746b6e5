import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from './deps.ts';

/** The console's HTML screens. */
export function registerPages(_admin: FastifyInstance, _deps: ConsoleDeps): void {}
