import type { z } from 'zod';
import { Invalid } from './errors.ts';

/** Parses with a zod schema; the first problem becomes an `Invalid` naming its field. */
export function parseWith<S extends z.ZodType>(schema: S, value: unknown, what = 'field'): z.infer<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = formatPath(issue.path);
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys.map((k) => formatPath([...issue.path, k])).join(', ');
    throw new Invalid(null, `unknown ${what}${issue.keys.length > 1 ? 's' : ''}: ${keys}`);
  }
  if (issue.code === 'invalid_type' && valueAt(value, issue.path) === undefined) throw new Invalid(field, 'is required');
  throw new Invalid(field, describe(issue));
}

/** Plain-language messages for the common problems; zod's own text for the rest. */
function describe(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return `must be ${issue.expected === 'int' ? 'an integer' : `a${/^[aeiou]/.test(issue.expected) ? 'n' : ''} ${issue.expected}`}`;
    case 'invalid_value':
      return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'too_small':
    case 'too_big': {
      const bound = issue.code === 'too_small' ? issue.minimum : issue.maximum;
      const word = issue.code === 'too_small' ? 'at least' : 'at most';
      if (issue.origin === 'string') return `must be ${word} ${bound} characters long`;
      if (issue.origin === 'array') return `must have ${word} ${bound} items`;
      return `must be ${word} ${bound}`;
    }
    default:
      return issue.message.charAt(0).toLowerCase() + issue.message.slice(1);
  }
}

function formatPath(path: PropertyKey[]): string | null {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out || null;
}

function valueAt(value: unknown, path: PropertyKey[]): unknown {
  let current = value;
  for (const part of path) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<PropertyKey, unknown>)[part];
  }
  return current;
}

/** A copy of a plain object without its null-valued properties (JSON's "not set"); anything else as it is. */
export function withoutNulls(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== null));
}
