import type { FastifyInstance } from 'fastify';
import type { ConsoleDeps } from './deps.ts';

/** Sign-in and sign-out: OIDC (`/auth/login`, `/auth/callback`), one-time links (`/login`), `/auth/logout`. */
export function registerAuthRoutes(_admin: FastifyInstance, _deps: ConsoleDeps): void {}
