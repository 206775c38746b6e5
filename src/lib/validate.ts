import type { z } from 'zod';
import { Invalid } from './errors.ts';

/** Parses with a zod schema; the first problem becomes an `Invalid` naming its field. */
export function parseWith<S extends z.ZodType>(schema: S, value: unknown, root?: string): z.infer<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = formatPath(root, issue.path);
  return failWith(issue, field);
}

function failWith(issue: z.core.$ZodIssue, field: string | null): never {
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys.map((k) => formatPath(field ?? undefined, [k])).join(', ');
    throw new Invalid(null, `unknown field${issue.keys.length > 1 ? 's' : ''}: ${keys}`);
  }
  if (issue.code === 'invalid_type' && (issue as { input?: unknown }).input === undefined) {
    throw new Invalid(field, 'is required');
  }
  throw new Invalid(field, lowerFirst(issue.message));
}

function formatPath(root: string | undefined, path: PropertyKey[]): string | null {
  let out = root ?? '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out || null;
}

function lowerFirst(s: string): string {
  return s.charAt(0).toLowerCase() + s.slice(1);
}
