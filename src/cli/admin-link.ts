import { loadConfig, publicBaseUrl } from '../config/index.ts';
import { createLoginTokens } from '../console/login-tokens.ts';
import { connectDb, migrateToLatest } from '../db/index.ts';
import { systemClock } from '../lib/clock.ts';
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
console.log(`${publicBaseUrl(config)}/admin/login?token=${token}`);
