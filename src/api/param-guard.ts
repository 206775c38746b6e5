import type { FastifyRequest } from 'fastify';
import { ERR } from '../lib/error-codes.ts';
import { AppError, Invalid } from '../lib/errors.ts';
import { isStorableText } from '../lib/storable-text.ts';

const unstorable = (value: unknown) => (Array.isArray(value) ? value : [value]).some((s) => typeof s === 'string' && !isStorableText(s));

/**
 * Refuses a request whose path parameters or query values hold a NUL byte (`%00`) or a lone
 * surrogate, before any handler sees it. No id, filter or cursor of ours contains one, and
 * PostgreSQL cannot even compare a text with one (it fails the query), so refusing here keeps
 * every route's answer a 4xx rather than a database error: a path names nothing (404, as for any
 * id that cannot exist), a query value is a 400 naming its parameter. One level only: the router
 * and the query parser give strings or arrays of strings, never deeper structures.
 */
export function rejectUnstorableParams(request: FastifyRequest): void {
  const params = (request.params ?? {}) as Record<string, unknown>;
  if (Object.values(params).some(unstorable)) throw new AppError(ERR.not_found, 'Not found (the path holds a NUL character or an unpaired surrogate).');
  const query = request.query;
  if (query === null || typeof query !== 'object') return;
  for (const [name, value] of Object.entries(query as Record<string, unknown>)) {
    if (!isStorableText(name)) throw new Invalid(null, 'a query parameter name holds a NUL character or an unpaired surrogate');
    if (unstorable(value)) throw new Invalid(name, 'must not contain NUL characters or unpaired surrogates');
  }
}
