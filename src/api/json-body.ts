import type { FastifyInstance } from 'fastify';
import { Invalid } from '../lib/errors.ts';
import { isStorableText } from '../lib/storable-text.ts';

/**
 * How deep a JSON body may nest. Real bodies need 4 levels (materials[i].url) plus whatever a
 * client puts in `metadata`; the limit keeps every later walk over the value (validation,
 * hashing, storage) cheap and far from the stack's end.
 */
const MAX_JSON_DEPTH = 32;

/**
 * JSON bodies are parsed by Fastify's own parser (prototype-poisoning checks included), then
 * checked once, without recursion, before any code sees them: nesting depth, and text that
 * one of the databases could not store as sent (NUL and unpaired surrogates: PostgreSQL
 * refuses NUL, and both would replace a lone surrogate), so both backends answer alike.
 */
export function registerJsonParser(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    parse(request, body as string, (error, value) => {
      if (error) return done(error, undefined);
      try {
        checkJsonValue(value);
        done(null, value);
      } catch (invalid) {
        done(invalid as Error, undefined);
      }
    });
  });
}

/** Throws `Invalid` naming the first field that is nested too deep or holds text we do not store. */
function checkJsonValue(value: unknown, maxDepth = MAX_JSON_DEPTH): void {
  const stack: { value: unknown; path: string; depth: number }[] = [{ value, path: '', depth: 0 }];
  while (stack.length > 0) {
    const { value: v, path, depth } = stack.pop()!;
    if (typeof v === 'string') {
      checkText(v, path);
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (depth >= maxDepth) throw new Invalid(path || null, `is nested more than ${maxDepth} levels deep`);
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) stack.push({ value: v[i], path: `${path}[${i}]`, depth: depth + 1 });
      continue;
    }
    for (const [key, item] of Object.entries(v)) {
      if (!isStorableText(key)) throw new Invalid(path || null, 'has a key with a NUL character or an unpaired surrogate');
      stack.push({ value: item, path: path ? `${path}.${key}` : key, depth: depth + 1 });
    }
  }
}

function checkText(text: string, path: string): void {
  if (!isStorableText(text)) throw new Invalid(path || null, 'must not contain NUL characters or unpaired surrogates');
}
