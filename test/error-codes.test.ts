// The error catalogue (src/lib/error-codes.ts) is the only place a code is written: the sources
// refer to codes as ERR.<code>, every code is produced somewhere, and the README's and
// docs/api.md's tables are the rendered catalogue (`npm run docs:errors` rewrites them).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { buildOpenApi } from '../src/api/openapi.ts';
import { API_ERROR_CODES, ERROR_CODES, ERROR_TABLE_END, ERROR_TABLE_START, JOB_ERROR_CODES, renderErrorTable, type CodeEntry, type ErrorCode } from '../src/lib/error-codes.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const CATALOGUE = path.join('src', 'lib', 'error-codes.ts');
const CODES = Object.keys(ERROR_CODES) as ErrorCode[];

/**
 * The same words used for something else: the providers' fault kinds (`kind: 'rate_limited'`)
 * and provider task statuses (`providerStatus: 'not_found'`).
 */
const NOT_CODES = [/\bkind(?:: | [!=]== )'rate_limited'/g, /\bcase 'rate_limited':/g, /\btype \w*Kind = [^;\n]*/g, /\bproviderStatus(?:: | [!=]== )'not_found'/g];

function sources(): { file: string; text: string }[] {
  const files = readdirSync(path.join(ROOT, 'src'), { recursive: true, encoding: 'utf8' })
    .map((f) => path.join('src', f))
    .filter((f) => /\.(ts|mts|mjs)$/.test(f) && !/\.test\.ts$/.test(f) && f !== CATALOGUE);
  return files.map((file) => ({ file, text: readFileSync(path.join(ROOT, file), 'utf8') }));
}

test('no source writes a code as a string: each is ERR.<code>', () => {
  const quoted = new RegExp(`(['"])(${CODES.join('|')})\\1`, 'g');
  const found: string[] = [];
  for (const { file, text } of sources()) {
    text.split('\n').forEach((line, i) => {
      const masked = NOT_CODES.reduce((l, re) => l.replace(re, (m) => ' '.repeat(m.length)), line);
      for (const m of masked.matchAll(quoted)) found.push(`${file}:${i + 1}: ${m[0]}`);
    });
  }
  assert.deepEqual(found, []);
});

test('every code in the catalogue is produced somewhere in src/', () => {
  const all = sources()
    .map((s) => s.text)
    .join('\n');
  const unused = CODES.filter((code) => !new RegExp(`\\bERR\\.${code}\\b`).test(all));
  assert.deepEqual(unused, []);
});

test('API codes have a status, job codes say whether they are retried, internal codes neither', () => {
  for (const code of CODES) {
    const e: CodeEntry = ERROR_CODES[code];
    assert.equal(e.http !== undefined, e.kind === 'api' || e.kind === 'both', `${code}: http`);
    assert.equal(e.retryable !== undefined, e.kind === 'job' || e.kind === 'both', `${code}: retryable`);
    assert.ok(e.description && !e.description.includes('\n') && !e.description.includes('|'), `${code}: one-line description`);
  }
});

test('the OpenAPI document lists the API codes in Error and the job codes in Job.error', () => {
  const doc = buildOpenApi('http://localhost') as { components: { schemas: Record<string, any> } };
  const { Error: error, Job: job } = doc.components.schemas;
  assert.deepEqual(error.properties.code.enum, API_ERROR_CODES);
  const jobError = job.properties.error.anyOf.find((s: { type?: string }) => s.type === 'object');
  assert.deepEqual(jobError.properties.code.enum, JOB_ERROR_CODES);
});

for (const doc of ['README.md', path.join('docs', 'api.md')]) {
  test(`${doc} holds the rendered table (npm run docs:errors)`, () => {
    const text = readFileSync(path.join(ROOT, doc), 'utf8');
    const start = text.indexOf(ERROR_TABLE_START);
    const end = text.indexOf(ERROR_TABLE_END);
    assert.ok(start >= 0 && end > start, `${doc}: ${ERROR_TABLE_START} … ${ERROR_TABLE_END}`);
    assert.equal(text.slice(start + ERROR_TABLE_START.length, end), `\n${renderErrorTable()}\n`);
  });
}
