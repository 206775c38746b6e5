import { loadConfig } from '../config/index.ts';
import { connectDb, migrateToLatest } from '../db/index.ts';
import { fail } from './signals.ts';

// `npm run migrate`: bring the schema up to date without starting anything (servers also do this at start).
const config = (() => {
  try {
    return loadConfig(process.env);
  } catch (error) {
    return fail(error);
  }
})();
const handle = await connectDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir }).catch(fail);
await migrateToLatest(handle).catch(fail);
await handle.close();
console.log('database is up to date');
