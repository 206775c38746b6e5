import fs from 'node:fs';
import path from 'node:path';

/**
 * The folder holding the console's views/ and static/: next to this module when run from the
 * sources, `dist/console` when bundled (scripts/build.mjs copies them there).
 */
export const consoleDir = fs.existsSync(path.join(import.meta.dirname, 'views')) ? import.meta.dirname : path.resolve(import.meta.dirname, '../console');
