// @backends sqlite
// Every table has one writer: the module declared below is the only source file with a
// statement that inserts, updates or deletes its rows, so a table's rules (which changes may
// happen, what goes with them in the same transaction) are read in one place. Pure source
// scanning of src/ (tests and migrations aside): no database is opened.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import type { Database } from '../src/db/index.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const SCHEMA = 'src/db/schema.ts';
const MIGRATIONS = 'src/db/migrations/';

type Kind = 'insert' | 'update' | 'delete';
/**
 * One file writes the table; or, for rows born in one place and changed in another, one file per
 * kind of statement (a kind left out: no source may do it).
 */
type Owner = string | { insert: string; update: string; delete?: string };

/** The documented ownership: who may write each table. */
const OWNERS: Record<keyof Database, Owner> = {
  // Born queued by the enqueue; every later change is a named transition. Never deleted.
  jobs: { insert: 'src/queue/enqueue.ts', update: 'src/queue/transitions.ts' },
  // A job's history and its change records: written by the transition that makes them, through
  // the one module that records transitions on each backend (and prunes the change log).
  job_attempts: 'src/queue/recording.ts',
  job_changes: 'src/queue/recording.ts',
  idempotency_keys: 'src/jobs/idempotency-keys.ts',
  assets: 'src/assets/repo.ts',
  // Written in the job's transaction by the outbox; every later change is a named function of
  // delivery-rows.ts (claims and outcomes, holds and releases per origin, a redelivery).
  webhook_deliveries: { insert: 'src/webhooks/outbox.ts', update: 'src/webhooks/delivery-rows.ts' },
  webhook_attempts: 'src/webhooks/deliver.ts',
  webhook_endpoints: 'src/webhooks/endpoints.ts',
  engine_circuits: 'src/queue/circuit.ts',
  rate_windows: 'src/jobs/rate-limit.ts',
  clients: 'src/clients/admin.ts',
  keys: 'src/clients/key-rows.ts',
  env_keys: 'src/clients/key-rows.ts',
  console_sessions: 'src/console/session.ts',
  console_login_tokens: 'src/console/login-tokens.ts',
  audit_log: 'src/audit/log.ts',
  usage_daily: 'src/queue/usage-rollup.ts',
  client_ids: 'src/clients/ids.ts',
};

interface Write {
  table: string | null;
  kind: Kind;
  file: string;
  line: number;
  statement: string;
}

/** Blanks comments (keeping line breaks, so line numbers hold): prose may say "update jobs". */
function withoutComments(text: string): string {
  const blank = (m: string) => m.replace(/[^\n]/g, ' ');
  // `//` after a `:` or inside a quote is a URL or a string, not a comment.
  return text.replace(/\/\*[\s\S]*?\*\//g, blank).replace(/(^|[^:'"`\\])(\/\/.*)$/gm, (_m, before: string, comment: string) => before + blank(comment));
}

const BUILDER_KINDS: Record<string, Kind> = { insertInto: 'insert', replaceInto: 'insert', mergeInto: 'update', updateTable: 'update', deleteFrom: 'delete' };
/** Kysely's builders; the table is the first argument (`'jobs'`, `'jobs as j'`), else null: not a literal. */
const BUILDER = /\b(insertInto|replaceInto|mergeInto|updateTable|deleteFrom)\s*\(\s*(?:(['"`])([A-Za-z_][\w]*)(?:\s+as\s+\w+)?\2)?/g;
/** Raw SQL, in any case; the name (quoted or not) is checked against the schema's tables. */
const RAW: { kind: Kind; re: RegExp }[] = [
  { kind: 'insert', re: /\b(?:insert(?:\s+or\s+\w+)?|replace)\s+into\s+"?([A-Za-z_]\w*)"?/gi },
  { kind: 'update', re: /\bupdate\s+"?([A-Za-z_]\w*)"?/gi },
  { kind: 'update', re: /\bmerge\s+into\s+"?([A-Za-z_]\w*)"?/gi },
  { kind: 'delete', re: /\bdelete\s+from\s+"?([A-Za-z_]\w*)"?/gi },
];

/** Every write statement of `text`, named by table (null: a builder given a computed name). */
function writesIn(file: string, text: string, tables: ReadonlySet<string>): Write[] {
  const code = withoutComments(text);
  const lineOf = (index: number) => code.slice(0, index).split('\n').length;
  const statementAt = (index: number) => text.split('\n')[lineOf(index) - 1].trim();
  const found: Write[] = [];
  for (const m of code.matchAll(BUILDER)) {
    found.push({ table: m[3] ?? null, kind: BUILDER_KINDS[m[1]], file, line: lineOf(m.index), statement: statementAt(m.index) });
  }
  for (const { kind, re } of RAW) {
    for (const m of code.matchAll(re)) {
      // "update the row" in a message is prose; only a table's name makes it a statement.
      if (tables.has(m[1].toLowerCase())) found.push({ table: m[1].toLowerCase(), kind, file, line: lineOf(m.index), statement: statementAt(m.index) });
    }
  }
  return found;
}

/** The tables of the `Database` interface, read from the schema's source. */
function schemaTables(): Set<string> {
  const text = readFileSync(path.join(ROOT, SCHEMA), 'utf8');
  const body = /export interface Database \{([^}]*)\}/.exec(text);
  assert.ok(body, `${SCHEMA} has no "export interface Database { … }"`);
  return new Set([...body[1].matchAll(/^\s*(\w+)\s*:/gm)].map((m) => m[1]));
}

function sourceFiles(): string[] {
  return readdirSync(path.join(ROOT, 'src'), { recursive: true, encoding: 'utf8' })
    .map((f) => path.posix.join('src', f.split(path.sep).join('/')))
    .filter((f) => /\.(ts|mts|mjs)$/.test(f) && !/\.test\.ts$/.test(f) && !f.startsWith(MIGRATIONS))
    .sort();
}

const ownerOf = (table: string, kind: Kind): string | undefined => {
  const owner = OWNERS[table as keyof Database];
  return typeof owner === 'string' ? owner : owner?.[kind];
};

/** The writes that break the ownership above, one line each. */
function strayWrites(writes: readonly Write[]): string[] {
  return writes.flatMap((w) => {
    const at = `${w.file}:${w.line}: ${w.statement}`;
    if (w.table === null) return [`${at}\n    the table is not a literal: name it, so that its writer can be checked`];
    if (!(w.table in OWNERS)) return [`${at}\n    ${w.table} is not a table of ${SCHEMA}`];
    const owner = ownerOf(w.table, w.kind);
    if (owner === w.file) return [];
    const rule = owner === undefined ? `no source may ${w.kind} ${w.table} rows` : `${w.table}'s ${w.kind}s belong to ${owner}`;
    return [`${at}\n    ${rule} (test/table-writers.test.ts)`];
  });
}

test('every table of the schema has its writer declared, in a file that exists', () => {
  assert.deepEqual(Object.keys(OWNERS).sort(), [...schemaTables()].sort());
  const files = new Set(Object.values(OWNERS).flatMap((o) => (typeof o === 'string' ? [o] : Object.values(o))));
  for (const file of files) assert.ok(existsSync(path.join(ROOT, file)), `${file} does not exist`);
});

test('each table is written only by its owner module', () => {
  const tables = schemaTables();
  const writes = sourceFiles().flatMap((file) => writesIn(file, readFileSync(path.join(ROOT, file), 'utf8'), tables));
  assert.ok(writes.length > 20, `only ${writes.length} write statements found: the scan is broken`);
  const stray = strayWrites(writes);
  assert.equal(stray.length, 0, `${stray.length} write(s) outside the table's owner module:\n  ${stray.join('\n  ')}`);
});

test("docs/architecture.md's table of writers names the same owners", () => {
  const doc = readFileSync(path.join(ROOT, 'docs/architecture.md'), 'utf8');
  const start = doc.indexOf('| table | written only by |');
  assert.ok(start >= 0, 'docs/architecture.md has no "| table | written only by |" table');
  const rows = doc.slice(start).split('\n\n')[0].split('\n').slice(2);
  for (const [table, owner] of Object.entries(OWNERS)) {
    const row = rows.find((r) => r.split('|')[1].includes(`\`${table}\``));
    assert.ok(row, `docs/architecture.md: no row for ${table}`);
    const files = typeof owner === 'string' ? [owner] : Object.values(owner);
    for (const file of files) assert.ok(row.includes(`\`${file.replace(/^src\//, '')}\``), `docs/architecture.md: ${table}'s row does not name ${file}`);
  }
  for (const row of rows) {
    for (const [, table] of row.split('|')[1].matchAll(/`(\w+)`/g)) assert.ok(table in OWNERS, `docs/architecture.md names ${table}, which the test does not`);
  }
});

test('the scan finds builder and raw SQL writes, and ignores comments and prose', () => {
  const tables = new Set(['jobs', 'keys']);
  const source = [
    "await db.insertInto('keys').values(row);",
    'await tx',
    '  .updateTable(',
    "    'jobs as j')",
    "db.deleteFrom(`keys`).where('id', '=', id);",
    'sql`UPDATE jobs SET status = 1`;',
    'sql`insert or replace into "keys" values (1)`;',
    'sql`delete from keys where id = 1`;',
    'db.updateTable(name);',
    "// updateTable('jobs') in a comment",
    "/* insertInto('keys') */ const url = 'http://example.invalid/'; // delete from keys",
    "throw new Error('could not update the client');",
  ].join('\n');
  const found = writesIn('src/x.ts', source, tables).map((w) => `${w.line} ${w.kind} ${w.table}`);
  assert.deepEqual(found.sort(), ['1 insert keys', '3 update jobs', '5 delete keys', '6 update jobs', '7 insert keys', '8 delete keys', '9 update null'].sort());
  assert.deepEqual(strayWrites([{ table: 'keys', kind: 'update', file: 'src/api/auth.ts', line: 3, statement: "db.updateTable('keys')" }]), [
    "src/api/auth.ts:3: db.updateTable('keys')\n    keys's updates belong to src/clients/key-rows.ts (test/table-writers.test.ts)",
  ]);
});
