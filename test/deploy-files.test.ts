// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { ENV_VARS, loadConfig } from '../src/config/index.ts';
import { startStack } from './helpers.ts';

// No Docker engine runs where these tests run, so the deployment files are checked against
// the app itself: its env schema, its build output, its routes.

const ROOT = path.resolve(import.meta.dirname, '..');
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

/** Variables that images other than ours read, set in our deployment files on purpose. */
const THIRD_PARTY_VARS: Record<string, { image: RegExp; why: string }> = {
  POSTGRES_USER: { image: /^postgres(:|$)/, why: 'postgres image: role created on first start' },
  POSTGRES_PASSWORD: { image: /^postgres(:|$)/, why: 'postgres image: password of that role (required)' },
  POSTGRES_DB: { image: /^postgres(:|$)/, why: 'postgres image: database created on first start' },
  MINIO_ROOT_USER: { image: /^minio\/(minio|mc)(:|$)/, why: 'minio image: admin account; minio-init logs in with it to create the bucket' },
  MINIO_ROOT_PASSWORD: { image: /^minio\/(minio|mc)(:|$)/, why: 'minio image: admin password (same use)' },
};
/** Read by Node libraries and npm, not by Zhinian; only the Dockerfile may set it. */
const NODE_VARS = new Set(['NODE_ENV']);

interface Service {
  image?: string;
  build?: unknown;
  command?: string | string[];
  environment?: Record<string, string | number | boolean | null> | string[];
  env_file?: string | string[];
  ports?: unknown[];
  container_name?: string;
  depends_on?: Record<string, { condition: string }> | string[];
  healthcheck?: { test?: string | string[]; disable?: boolean };
}

const compose = parse(read('docker-compose.yml'), { merge: true }) as { services: Record<string, Service> };
const services = compose.services;
const S3_IMAGE = /^(minio\/minio|bitnami\/minio|quay\.io\/minio\/minio|localstack\/localstack|chrislusf\/seaweedfs)(:|$)/;
const s3Name = Object.keys(services).find((name) => S3_IMAGE.test(services[name].image ?? ''));

function environmentOf(service: Service): Record<string, string> {
  const env = service.environment ?? {};
  if (Array.isArray(env)) return Object.fromEntries(env.map((entry) => [entry.split('=')[0], entry.split('=').slice(1).join('=')]));
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v ?? '')]));
}

/** `NAME=value` and commented-out `# NAME=value` lines of an env file. */
function envFile(file: string): { set: Record<string, string>; commented: string[] } {
  const set: Record<string, string> = {};
  const commented: string[] = [];
  for (const line of read(file).split('\n')) {
    const m = /^\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (!m) continue;
    if (m[1]) commented.push(m[2]);
    else set[m[2]] = m[3].trim();
  }
  return { set, commented };
}

/** Dockerfile instructions (continuations joined), grouped by stage. */
function dockerfileStages(): { from: string; instructions: { op: string; args: string }[] }[] {
  const joined = read('Dockerfile')
    .split('\n')
    .filter((line) => !/^\s*#/.test(line))
    .join('\n')
    .replace(/\\\n/g, ' ');
  const stages: { from: string; instructions: { op: string; args: string }[] }[] = [];
  for (const line of joined
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)) {
    const [, op, args] = /^(\S+)\s+(.*)$/.exec(line)!;
    if (op.toUpperCase() === 'FROM') stages.push({ from: args, instructions: [] });
    else stages.at(-1)!.instructions.push({ op: op.toUpperCase(), args });
  }
  return stages;
}

function buildDist(): void {
  execFileSync(process.execPath, [path.join(ROOT, 'scripts/build.mjs')], { cwd: ROOT, stdio: 'inherit' });
}

/** `node [--flags] dist/cli/<entry>.mjs` → the entry's file, which must be one build.mjs produces. */
function distEntry(command: string[]): string {
  assert.equal(command[0], 'node', `runs node directly: ${command.join(' ')}`);
  const args = command.slice(1).filter((a) => !a.startsWith('-'));
  assert.equal(args.length, 1, `one script: ${command.join(' ')}`);
  const entries = [...read('scripts/build.mjs').matchAll(/\[([^\]]*)\]\.map\(\(name\) => path\.join\(root, 'src\/cli'/g)].flatMap((m) =>
    [...m[1].matchAll(/'(\w+)'/g)].map((n) => n[1]),
  );
  const m = /^dist\/cli\/(\w+)\.mjs$/.exec(args[0]);
  // npm scripts are not accepted: they rebuild from src/, which the runtime image does not hold.
  assert.ok(m && entries.includes(m[1]), `${args[0]} is not one of the entries scripts/build.mjs bundles (${entries.join(', ')})`);
  return m![1];
}

const routes = [...read('src/api/routes/meta.ts').matchAll(/app\.get\('([^']+)'/g)].map((m) => m[1]);

test('compose has the API, a scalable worker, PostgreSQL and an S3 store', () => {
  for (const name of ['zhinian-api', 'zhinian-worker', 'postgres']) assert.ok(services[name], `service ${name}`);
  assert.match(services.postgres.image ?? '', /^postgres:16/);
  assert.ok(s3Name, 'an S3-compatible store service');
  const worker = services['zhinian-worker'];
  // A published host port or a fixed name makes `--scale zhinian-worker=4` fail on the second copy.
  assert.equal(worker.ports, undefined, 'the worker publishes no port');
  assert.equal(worker.container_name, undefined, 'the worker has no fixed container name');
  assert.ok(services['zhinian-api'].ports?.length, 'the API publishes its port');
  for (const name of ['zhinian-api', 'zhinian-worker']) {
    const deps = services[name].depends_on as Record<string, { condition: string }>;
    assert.equal(deps?.postgres?.condition, 'service_healthy', `${name} waits for postgres`);
    assert.equal(deps?.[s3Name!]?.condition, 'service_healthy', `${name} waits for ${s3Name}`);
    const init = Object.entries(deps).find(([, d]) => d.condition === 'service_completed_successfully');
    assert.ok(init, `${name} waits for the bucket to be created`);
    assert.match(JSON.stringify(services[init[0]].command), /mc mb .*ZHINIAN_S3_BUCKET/, 'the init service creates ZHINIAN_S3_BUCKET');
  }
});

test('every variable the deployment files name is one the app (or the image that gets it) reads', () => {
  const known = new Set(ENV_VARS);
  const unknown = (names: string[], allowThirdParty: boolean) => names.filter((n) => !known.has(n) && !(allowThirdParty && n in THIRD_PARTY_VARS));
  for (const [name, service] of Object.entries(services)) {
    const ours = service.build !== undefined;
    assert.deepEqual(unknown(Object.keys(environmentOf(service)), !ours), [], `environment of ${name}`);
  }
  for (const file of ['.env.docker.example', '.env.example']) {
    const { set, commented } = envFile(file);
    assert.deepEqual(unknown([...Object.keys(set), ...commented], file === '.env.docker.example'), [], `${file} names variables the app does not read`);
  }
  const dockerEnv = dockerfileStages()
    .at(-1)!
    .instructions.filter((i) => i.op === 'ENV')
    .flatMap((i) => [...i.args.matchAll(/(\w+)=/g)].map((m) => m[1]));
  assert.deepEqual(
    dockerEnv.filter((n) => !known.has(n) && !NODE_VARS.has(n)),
    [],
    'Dockerfile ENV',
  );
  // Each third-party variable reaches a service running the image that reads it.
  for (const [name, { image }] of Object.entries(THIRD_PARTY_VARS)) {
    assert.ok(
      Object.values(services).some((s) => image.test(s.image ?? '') && [s.env_file].flat().includes('.env.docker')),
      `${name} reaches its image`,
    );
  }
});

test('the compose env file is a valid configuration and matches postgres and the store', () => {
  const { set } = envFile('.env.docker.example');
  for (const name of ['zhinian-api', 'zhinian-worker']) {
    assert.deepEqual([services[name].env_file].flat(), ['.env.docker'], `${name} reads .env.docker`);
    const appEnv = Object.fromEntries(Object.entries({ ...set, ...environmentOf(services[name]) }).filter(([k]) => ENV_VARS.includes(k)));
    assert.doesNotThrow(() => loadConfig(appEnv), `${name}'s configuration`);
  }
  assert.doesNotThrow(() => loadConfig(envFile('.env.example').set), '.env.example');
  const db = new URL(set.DATABASE_URL);
  assert.equal(db.protocol, 'postgres:');
  assert.equal(db.hostname, 'postgres', 'DATABASE_URL points at the postgres service');
  assert.deepEqual([db.username, decodeURIComponent(db.password), db.pathname.slice(1)], [set.POSTGRES_USER, set.POSTGRES_PASSWORD, set.POSTGRES_DB]);
  for (const required of ['ZHINIAN_S3_BUCKET', 'ZHINIAN_S3_ENDPOINT', 'ZHINIAN_PUBLIC_BASE_URL', 'ZHINIAN_API_KEYS', 'ZHINIAN_WEBHOOK_SECRET', 'ZHINIAN_SIGNING_SECRET']) {
    assert.ok(set[required], `.env.docker.example sets ${required}`);
  }
  assert.equal(new URL(set.ZHINIAN_S3_ENDPOINT).host, `${s3Name}:9000`, 'ZHINIAN_S3_ENDPOINT points at the store service');
  // A presigned download link would name that in-network host, which clients cannot reach.
  assert.notEqual(set.ZHINIAN_S3_PRESIGN, 'true', 'downloads stream through the API');
  const accessKey = Object.keys(set).find((k) => /^ZHINIAN_S3_ACCESS_KEY/.test(k));
  const secretKey = Object.keys(set).find((k) => /^ZHINIAN_S3_SECRET/.test(k));
  assert.equal(set[accessKey ?? ''], set.MINIO_ROOT_USER, 'S3 access key = the MinIO account');
  assert.equal(set[secretKey ?? ''], set.MINIO_ROOT_PASSWORD, 'S3 secret = the MinIO password');
});

test('the API and worker commands run entries the build produces', () => {
  buildDist();
  const api = distEntry([services['zhinian-api'].command ?? []].flat());
  const worker = distEntry([services['zhinian-worker'].command ?? []].flat());
  assert.equal(api, 'server', 'the API service runs the API only');
  assert.equal(worker, 'worker', 'the worker service runs a worker only');
  for (const entry of [api, worker]) assert.ok(existsSync(path.join(ROOT, 'dist/cli', `${entry}.mjs`)));
  // What `npm prune --omit=dev` must keep: every package the bundle and the copied scripts import.
  const pkg = JSON.parse(read('package.json')) as { dependencies: Record<string, string> };
  const imported = new Set<string>();
  for (const file of readdirSync(path.join(ROOT, 'dist/cli')).filter((f) => f.endsWith('.mjs'))) {
    const code = read(path.join('dist/cli', file));
    // A package name has no spaces or commas (so `["from", "to"]` in the code is no import).
    for (const m of code.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["']([^"'./\s,][^"'\s,]*)["']/g)) {
      const spec = m[1];
      if (spec.startsWith('node:') || builtinModules.includes(spec)) continue;
      imported.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]);
    }
  }
  assert.ok(imported.has('fastify'), 'the import scan sees the bundle');
  assert.deepEqual(
    [...imported].filter((p) => !(p in pkg.dependencies)),
    [],
    'imported by dist/ but not a production dependency',
  );
});

test('healthchecks probe real routes, and the checks work against a running server', async (t) => {
  const api = services['zhinian-api'].healthcheck?.test;
  assert.ok(Array.isArray(api) && api[0] === 'CMD', 'the API has an exec-form healthcheck');
  const apiPath = /127\.0\.0\.1:3000(\/\w+)/.exec(api.join(' '))?.[1];
  assert.ok(apiPath && routes.includes(apiPath), `API healthcheck path ${apiPath} is one of ${routes.join(', ')}`);
  assert.equal(environmentOf(services['zhinian-api']).PORT, '3000', 'the checked port is the one the API listens on');
  // The image's check fetches /readyz, which a worker (no HTTP server) would fail forever.
  assert.equal(services['zhinian-worker'].healthcheck?.disable, true, 'the worker turns the image healthcheck off');
  assert.match(JSON.stringify(services.postgres.healthcheck?.test), /pg_isready/);
  assert.ok(services[s3Name!].healthcheck?.test, 'the store has a healthcheck');

  const dockerCheck = dockerfileStages()
    .at(-1)!
    .instructions.find((i) => i.op === 'HEALTHCHECK');
  assert.ok(dockerCheck, 'the runtime image has a HEALTHCHECK');
  const dockerCmd = JSON.parse(/\bCMD\s+(\[.*\])$/.exec(dockerCheck.args)![1]) as string[];
  const dockerPath = /\/(\w+)'/.exec(dockerCmd.join(' '))?.[0].slice(0, -1);
  assert.ok(dockerPath && routes.includes(dockerPath), `Dockerfile healthcheck path ${dockerPath}`);

  const stack = await startStack({ worker: false });
  let stopped = false;
  t.after(() => (stopped ? undefined : stack.stop()));
  const port = new URL(stack.url).port;
  // Asynchronously: the server answering the check runs in this process.
  const run = (cmd: string[]) =>
    new Promise<number | null>((resolve) => {
      const args = cmd.slice(1).map((a) => a.replace('127.0.0.1:3000', `127.0.0.1:${port}`));
      const child = execFile(cmd[0] === 'node' ? process.execPath : cmd[0], args, { env: { ...process.env, PORT: port }, timeout: 10_000 });
      child.on('exit', (code) => resolve(code));
    });
  assert.equal(await run(api.slice(1)), 0, 'compose check passes against a ready server');
  assert.equal(await run(dockerCmd), 0, 'image check passes against a ready server');
  await stack.stop();
  stopped = true;
  assert.equal(await run(api.slice(1)), 1, 'compose check fails when nothing answers');
  assert.equal(await run(dockerCmd), 1, 'image check fails when nothing answers');
});

test('the Dockerfile builds in a separate stage and runs unprivileged, with ffmpeg, on production packages', () => {
  const stages = dockerfileStages();
  assert.ok(stages.length >= 2, 'multi-stage');
  const runtime = stages.at(-1)!;
  const ops = (op: string) => runtime.instructions.filter((i) => i.op === op).map((i) => i.args);
  assert.match(runtime.from, /^node:20-bookworm-slim\b/);
  const user = ops('USER').at(-1);
  assert.ok(user && !/^(root|0)(:|$)/.test(user), `runs as a non-root user (USER ${user})`);
  assert.ok(
    ops('RUN').some((r) => /apt-get install\b.*\bffmpeg\b/.test(r)),
    'installs ffmpeg',
  );
  const build = stages.find((s) => s.instructions.some((i) => i.op === 'RUN' && /scripts\/build\.mjs/.test(i.args)));
  assert.ok(build, 'a stage runs scripts/build.mjs');
  assert.ok(
    build.instructions.some((i) => i.op === 'RUN' && /npm (prune|ci)\b.*--omit=dev/.test(i.args)),
    'dev packages are dropped',
  );
  const copies = ops('COPY').join('\n');
  for (const what of ['node_modules', 'dist', 'package.json']) assert.match(copies, new RegExp(`--from=\\S+ /app/${what}`), `copies ${what}`);
  assert.match(ops('EXPOSE').join(' '), /\b3000\b/);
  assert.match(ops('ENV').join(' '), /HOST=0\.0\.0\.0/, 'listens on every interface of the container');
  const cmd = JSON.parse(ops('CMD').at(-1)!) as string[];
  buildDist();
  assert.equal(distEntry(cmd), 'server', 'the default command runs the API');
  assert.ok(existsSync(path.join(ROOT, cmd.at(-1)!)), `${cmd.at(-1)} exists after a build`);
  const ignored = read('.dockerignore').split('\n');
  for (const entry of ['node_modules', 'dist', 'data', '.env']) assert.ok(ignored.includes(entry), `.dockerignore keeps ${entry} out of the build context`);
});
