// Runs every *.test.ts under src/ and test/ with node's test runner (Node 20 does not glob),
// once per database backend: each file on the backends its marker names, PostgreSQL meaning
// 127.0.0.1:5432, database `test`, a schema per data dir. Ends with one combined summary in
// the spec reporter's format; exits non-zero if any pass failed.
//
// The marker is a `//` line among a test file's leading comment lines:
//   // @backends sqlite,postgres   the file opens the database (a stack, a worker, a handle)
//   // @backends postgres          PostgreSQL's own tests, no loop over backends
// A file without one runs on SQLite only. The choice is explicit: a new test that opens the
// database says so, rather than being guessed from the helpers it calls.
//
//   npm test                      both backends (PostgreSQL must be running: it is not skipped)
//   npm test -- test/queue.test.ts  the given files, on both backends
//   ZHINIAN_TEST_BACKENDS=sqlite npm test   one backend only
//   npm test -- --list            print `backend file` for each file that would run, run nothing
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const PG_URL = process.env.ZHINIAN_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const KNOWN_BACKENDS = ['sqlite', 'postgres'];
const DEFAULT_BACKENDS = ['sqlite'];

/** The backends a test file declares with `// @backends a,b` in its leading comments. */
function backendsOf(file) {
  let inBlock = false;
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (inBlock) {
      if (line.includes('*/')) inBlock = false;
      continue;
    }
    const marker = /^\/\/\s*@backends\s+(\S+)\s*$/.exec(line);
    if (marker) {
      const names = marker[1].split(',').filter(Boolean);
      const unknown = names.filter((n) => !KNOWN_BACKENDS.includes(n));
      if (unknown.length > 0 || names.length === 0) {
        console.error(`${file}: unknown backend in "${line}" (known: ${KNOWN_BACKENDS.join(', ')})`);
        process.exit(1);
      }
      return names;
    }
    if (line === '' || line.startsWith('//')) continue;
    if (line.startsWith('/*')) {
      inBlock = !line.includes('*/', 2);
      continue;
    }
    break; // first code line: the leading comments are over
  }
  return DEFAULT_BACKENDS;
}

function find(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'node_modules' ? [] : find(full);
    return entry.name.endsWith('.test.ts') ? [full] : [];
  });
}

const args = process.argv.slice(2);
const listOnly = args.includes('--list');
const only = args.filter((a) => a !== '--list').map((f) => path.normalize(f));
const files = only.length > 0 ? only : ['src', 'test'].flatMap(find).sort();
const backends = (process.env.ZHINIAN_TEST_BACKENDS ?? 'sqlite,postgres')
  .split(',')
  .map((b) => b.trim())
  .filter(Boolean);

if (listOnly) {
  for (const backend of backends) for (const f of files.filter((f) => backendsOf(f).includes(backend))) console.log(`${backend} ${f}`);
  process.exit(0);
}

const runId = `r${Date.now().toString(36)}`;
const scratch = mkdtempSync(path.join(os.tmpdir(), 'zhinian-test-run-'));

function psql(statement) {
  return spawnSync('psql', [PG_URL, '-v', 'ON_ERROR_STOP=1', '-qAtc', statement], {
    encoding: 'utf8',
    env: { ...process.env, PGOPTIONS: '-c client_min_messages=warning', PGCONNECT_TIMEOUT: '5' },
  });
}

if (backends.includes('postgres')) {
  const probe = psql('select 1');
  if (probe.error || probe.status !== 0) {
    console.error(
      `\nPostgreSQL is not reachable at ${PG_URL} (${probe.error?.message ?? probe.stderr.trim()}).\n` +
        'The suite runs on SQLite and on PostgreSQL: start PostgreSQL (trust auth for 127.0.0.1, database `test`;\n' +
        '.ci/run sets this up on Debian), or run one backend with ZHINIAN_TEST_BACKENDS=sqlite.\n',
    );
    process.exit(1);
  }
}

const totals = { tests: 0, suites: 0, pass: 0, fail: 0, cancelled: 0, skipped: 0, todo: 0, duration_ms: 0 };
const lines = [];
let failed = false;
for (const backend of backends) {
  const selected = files.filter((f) => backendsOf(f).includes(backend));
  if (selected.length === 0) continue;
  console.log(`\n=== backend ${backend}: ${selected.length} test files ===\n`);
  const tap = path.join(scratch, `${backend}.tap`);
  const result = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      '--test',
      '--test-concurrency=2',
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      '--test-reporter=tap',
      `--test-reporter-destination=${tap}`,
      ...selected,
    ],
    {
      stdio: 'inherit',
      env: {
        ...process.env,
        LOG_LEVEL: process.env.LOG_LEVEL ?? 'silent',
        ZHINIAN_TEST_BACKEND: backend,
        ZHINIAN_TEST_RUN_ID: runId,
        ZHINIAN_TEST_PG_URL: PG_URL,
      },
    },
  );
  const counts = summaryOf(tap);
  const passFailed = result.status !== 0 || !counts || counts.fail > 0 || counts.cancelled > 0;
  if (passFailed) failed = true;
  if (counts) for (const key of Object.keys(totals)) totals[key] += counts[key];
  lines.push(
    counts
      ? `${backend}: ${counts.tests} tests, ${counts.pass} pass, ${counts.fail} fail, ${counts.cancelled} cancelled, ${counts.skipped} skipped, ${Math.round(counts.duration_ms / 1000)} s`
      : `${backend}: no summary (runner exit ${result.status ?? result.signal})`,
  );
  // Each file drops its schemas when it passes; a passing run also sweeps what crashed files left.
  if (backend === 'postgres' && !passFailed) {
    const swept = psql(dropSchemasSql(runId));
    if (swept.status !== 0) console.error(`# could not drop this run's schemas (zt_${runId}_*): ${swept.error?.message ?? swept.stderr.trim()}`);
  }
}
rmSync(scratch, { recursive: true, force: true });

console.log('\n' + lines.map((l) => `# ${l}`).join('\n'));
for (const [key, value] of Object.entries(totals)) console.log(`ℹ ${key} ${key === 'duration_ms' ? value.toFixed(3) : value}`);
process.exit(failed ? 1 : 0);

/** The final counts of a TAP report (`# tests 12`, `# pass 12`, …), or null if it has none. */
function summaryOf(file) {
  let text;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const counts = {};
  for (const key of Object.keys(totals)) {
    const matches = [...text.matchAll(new RegExp(`^# ${key} ([\\d.]+)$`, 'gm'))];
    if (matches.length === 0) return null;
    counts[key] = Number(matches.at(-1)[1]);
  }
  return counts;
}

function dropSchemasSql(id) {
  return `do $$ declare s text; begin
    for s in select nspname from pg_namespace where nspname like 'zt\\_${id}\\_%' loop
      execute format('drop schema %I cascade', s);
    end loop; end $$;`;
}
