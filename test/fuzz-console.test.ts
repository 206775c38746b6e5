// @backends sqlite,postgres
// Every console route (read from the server's own route tree, so a new route is covered the day
// it is added) with hostile path parameters, query values and bodies, as an admin with a valid
// CSRF token: never a 5xx, errors as `{ error, code }` (pages as a page without database text or
// stack), and NUL or a lone surrogate anywhere is a 4xx.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { consoleSignIn } from './console-helpers.ts';
import { startStack, type Stack } from './helpers.ts';

/** `METHOD /path` for every route in Fastify's printed route tree (`├── /admin/api/clients (POST, GET, HEAD)`, children indented). */
export function routesOf(tree: string): string[] {
  const prefixes: string[] = [];
  const routes: string[] = [];
  for (const line of tree.split('\n')) {
    const m = /^([│\s├└─]*?)[├└]── (\S*?)(?: \(([^)]+)\))?$/.exec(line);
    if (!m) continue;
    const depth = Math.round(m[1].length / 4);
    prefixes[depth] = (depth > 0 ? prefixes[depth - 1] : '') + m[2];
    prefixes.length = depth + 1;
    if (m[3]) for (const method of m[3].split(', ')) routes.push(`${method} ${prefixes[depth]}`);
  }
  return routes;
}

const HOSTILE_SEGMENTS = ['%00', 'job_%00', 'x%00y', '%ED%A0%80', '%F0%9F%98%80', '..%2F..%2Fetc', "'%20or%201=1--", 'a'.repeat(300)];
const HOSTILE_QUERY = ['%00', 'a%00b', '%ED%A0%80', '-1', '1e309', "'", '[]', 'x'.repeat(2000)];
const QUERY_NAMES = ['status', 'capability', 'engine', 'clientId', 'kind', 'jobId', 'limit', 'before', 'from', 'to', 'lang', 'range', 'q'];
const HOSTILE_BODIES = [
  '{"id":"a\\u0000b"}',
  '{"name":"a\\u0000b"}',
  '{"name":"\\ud800"}',
  '{"user":"\\u0000"}',
  '{"expiresAt":"\\u0000"}',
  '{"all":true,"user":"x"}',
  '{"disabled":"yes","weight":-1,"allowedEngines":[null]}',
  '[]',
  'null',
  '{"a":',
  `{"name":"${'x'.repeat(100_000)}"}`,
];

/** Database or runtime text that must never reach an answer. */
const LEAKS = /invalid byte sequence|SQLITE_|syntax error at|violates|relation "|column "|\bat [\w.]+ \(|\.ts:\d+|node_modules/;

describe('fuzz: every console route', () => {
  let stack: Stack;
  let admin: Awaited<ReturnType<typeof consoleSignIn>>;
  let routes: string[];
  let csrfToken: string;
  before(async () => {
    stack = await startStack({ worker: false });
    admin = await consoleSignIn(stack);
    csrfToken = (await admin('GET', '/admin/api/me')).body.csrfToken;
    // Sign-out would end the fuzzer's own session: it is probed last, on its own.
    routes = routesOf(stack.routeTree()).filter((r) => / \/admin/.test(r) && !r.startsWith('HEAD ') && r !== 'POST /admin/auth/logout');
  });
  after(async () => {
    await stack?.stop();
  });

  /** One request; fails the test on a 5xx, a leak, or an error answer in the wrong shape. */
  async function probe(method: string, target: string, body?: string): Promise<number> {
    const headers: Record<string, string> = { cookie: admin.cookie, 'x-csrf-token': csrfToken };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${stack.url}${target}`, { method, headers, body, redirect: 'manual' });
    const text = await res.text();
    const what = `${method} ${target.slice(0, 200)}${body === undefined ? '' : ` ${body.slice(0, 80)}`} → ${res.status} ${text.slice(0, 300)}`;
    assert.ok(res.status < 500, what);
    assert.doesNotMatch(text, LEAKS, what);
    if (res.status >= 400 && (res.headers.get('content-type') ?? '').includes('json')) {
      const parsed = JSON.parse(text);
      assert.equal(typeof parsed.error, 'string', what);
      assert.match(parsed.code, /^[a-z_]+$/, what);
    }
    return res.status;
  }

  test('the route tree lists the console routes', () => {
    for (const expected of ['GET /admin/api/clients', 'POST /admin/api/clients', 'PATCH /admin/api/clients/:id', 'GET /admin/jobs/:id', 'POST /admin/api/sessions/end']) {
      assert.ok(routes.includes(expected), `${expected} in ${routes.join(', ')}`);
    }
  });

  test('hostile path parameters: 4xx, never a 5xx or a database message', async () => {
    for (const route of routes) {
      const [method, path] = route.split(' ');
      if (!path.includes(':') && !path.includes('*')) continue;
      for (const segment of HOSTILE_SEGMENTS) {
        const target = path.replace(/:[A-Za-z]+|\*/g, segment);
        const status = await probe(method, target, method === 'GET' ? undefined : '{}');
        if (segment.includes('%00') || segment === '%ED%A0%80') assert.ok(status >= 400 && status < 500, `${method} ${target}: ${status}`);
      }
    }
  });

  test('hostile query values on every route: NUL or a lone surrogate is a 400 naming the parameter', async () => {
    for (const route of routes) {
      const [method, rawPath] = route.split(' ');
      const path = rawPath.replace(/:[A-Za-z]+|\*/g, 'job_00000000000000000000000000');
      const body = method === 'GET' ? undefined : '{}';
      // Every parameter at once with each value; then NUL in each parameter alone, which must be refused by name.
      for (const value of HOSTILE_QUERY) await probe(method, `${path}?${QUERY_NAMES.map((n) => `${n}=${value}`).join('&')}`, body);
      for (const name of QUERY_NAMES) {
        const target = `${path}?${name}=a%00b`;
        const res = await fetch(`${stack.url}${target}`, { method, headers: { cookie: admin.cookie, 'x-csrf-token': csrfToken }, body, redirect: 'manual' });
        assert.equal(res.status, 400, `${method} ${target}`);
        assert.match((await res.json()).error, new RegExp(`^${name}: `), `${method} ${target} names the parameter`);
      }
    }
  });

  test('hostile bodies on every route that changes something: 4xx', async () => {
    const made = await admin('POST', '/admin/api/clients', { json: { id: 'fuzz-target' } });
    assert.equal(made.status, 201);
    for (const route of routes) {
      const [method, rawPath] = route.split(' ');
      if (method === 'GET') continue;
      const path = rawPath.replace(':keyId', made.body.key.id).replace(/:[A-Za-z]+/g, 'fuzz-target');
      for (const body of HOSTILE_BODIES) await probe(method, path, body);
    }
    for (const body of HOSTILE_BODIES) await probe('POST', '/admin/auth/logout?x=1', body);
  });
});
