import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from '../deps.ts';

export function registerUsageApi(_admin: FastifyInstance, _deps: ConsoleDeps): void {}
