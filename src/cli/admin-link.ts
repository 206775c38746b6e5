import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, publicBaseUrl } from '../config/index.ts';
import { createLoginTokens } from '../console/login-tokens.ts';
import { connectDb, migrateToLatest } from '../db/index.ts';
import { systemClock } from '../lib/clock.ts';
import { INSTANCE_URL_FILE } from './boot.ts';
import { fail } from './signals.ts';

// `npm run admin-link`: a fresh one-time console sign-in link (15 minutes, single use, admin),
// for a console without an identity provider. Any instance on the same database accepts it.
const config = (() => {
  try {
    return loadConfig(process.env);
  } catch (error) {
    return fail(error);
  }
})();
if (config.console.oidc) {
  console.error(`The console signs in through single sign-on (ZHINIAN_OIDC_ISSUER=${config.console.oidc.issuer}); sign-in links are off.`);
  process.exit(1);
}
const handle = await connectDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir }).catch(fail);
await migrateToLatest(handle).catch(fail);
const token = await createLoginTokens(handle, systemClock).issue().catch(fail);
await handle.close();
console.log(`${instanceUrl()}/admin/login?token=${token}`);

/** The published base URL, else the one the last server on this data dir started with (its real port), else the configured one. */
function instanceUrl(): string {
  if (config.http.publicBaseUrl) return config.http.publicBaseUrl;
  try {
    const noted = fs.readFileSync(path.join(config.dataDir, INSTANCE_URL_FILE), 'utf8').trim();
    if (/^https?:\/\/\S+$/.test(noted)) return noted;
  } catch {
    // no server started here yet
  }
  return publicBaseUrl(config);
}
