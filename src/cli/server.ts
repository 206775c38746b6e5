import { boot } from './boot.ts';
import { exitOnSignals, fail } from './signals.ts';

// `npm run server`: the API only; run workers with `npm run worker`.
const starting = boot({ env: process.env, server: true, worker: false });
exitOnSignals(starting);
const running = await starting.catch(fail);
console.log(`Zhinian API listening at ${running.url}`);
if (running.keyCreated || !running.config.apiKeys) console.log(`API key (client "default"): ${running.apiKeys[0].key}`);
