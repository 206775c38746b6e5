import { boot } from './boot.ts';
import { exitOnSignals, fail } from './signals.ts';

// `npm run server`: the API only; run workers with `npm run worker`.
const running = await boot({ env: process.env, server: true, worker: false }).catch(fail);
exitOnSignals(running);
console.log(`Zhinian API listening at ${running.url}`);
if (running.keyCreated || !running.config.apiKeys) console.log(`API key (client "default"): ${running.apiKeys[0].key}`);
