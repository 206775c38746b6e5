// `npm run docs:errors`: rewrites the error-code tables of README.md and docs/api.md (between
// `<!-- error-codes:start -->` and `<!-- error-codes:end -->`) from src/lib/error-codes.ts.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { withErrorTable } from '../src/lib/error-codes.ts';

const root = path.resolve(import.meta.dirname, '..');
for (const doc of ['README.md', 'docs/api.md']) {
  const file = path.join(root, doc);
  const before = readFileSync(file, 'utf8');
  const after = withErrorTable(before);
  if (after !== before) writeFileSync(file, after);
  console.log(`${doc}: ${after === before ? 'up to date' : 'rewritten'}`);
}
