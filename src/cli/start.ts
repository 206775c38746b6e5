import { boot } from './boot.ts';
import { exitOnSignals, fail } from './signals.ts';

// `npm start`: the API and an embedded worker in one process, zero configuration.
const starting = boot({ env: process.env, server: true, worker: true });
exitOnSignals(starting);
const running = await starting.catch(fail);

const key = running.apiKeys[0];
const keyNote = running.config.apiKeys ? `(from ZHINIAN_API_KEYS, client "${key.clientId}")` : `(client "default", kept in ${running.config.dataDir}/api-key)`;
console.log(`
Zhinian is running at ${running.url}  — API and embedded worker, data in ${running.config.dataDir}

API key ${keyNote}:
  ${key.key}

Try it:
  curl -s -X POST ${running.url}/api/v1/jobs \\
    -H "Authorization: Bearer ${key.key}" -H "Content-Type: application/json" \\
    -d '{"capability":"image.generate","prompt":"a red fox in the snow","width":768,"height":512}'
  curl -s -H "Authorization: Bearer ${key.key}" ${running.url}/api/v1/jobs
${
  running.adminLink
    ? `
Console (one-time sign-in link, valid 15 minutes; \`npm run admin-link\` prints a fresh one):
  ${running.adminLink}
`
    : `
Console: ${running.url}/admin (sign-in through ${running.config.console.oidc?.issuer})
`
}`);
