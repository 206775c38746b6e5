import type { FastifyRequest } from 'fastify';
import { Invalid } from '../lib/errors.ts';

/** As json-body.ts checks bodies: no U+0000, no lone surrogate (neither database stores them as sent). */
const isStorableText = (text: string) => !text.includes('\u0000') && (text as string & { isWellFormed(): boolean }).isWellFormed();

/**
 * Refuses a request whose path parameters or query values hold a NUL byte (`%00`) or a lone
 * surrogate, naming the parameter, before any handler sees it. No id, filter or cursor of ours contains one, and
 * PostgreSQL cannot even compare a text with one (it fails the query), so refusing here keeps
 * every route's answer a 400 rather than a database error. One level only: the router and the
 * query parser give strings or arrays of strings, never deeper structures.
 */
export function rejectUnstorableParams(request: FastifyRequest): void {
  for (const [where, values] of [
    ['path', request.params],
    ['query', request.query],
  ] as const) {
    if (values === null || typeof values !== 'object') continue;
    for (const [name, value] of Object.entries(values as Record<string, unknown>)) {
      const strings = Array.isArray(value) ? value : [value];
      if (!isStorableText(name) || strings.some((s) => typeof s === 'string' && !isStorableText(s))) {
        throw new Invalid(isStorableText(name) ? name : null, `must not contain NUL characters or unpaired surrogates (${where} parameter)`);
      }
    }
  }
}
