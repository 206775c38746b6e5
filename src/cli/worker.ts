import { boot } from './boot.ts';
import { exitOnSignals, fail } from './signals.ts';

// `npm run worker`: runs jobs and sends webhooks; any number may share one database.
const starting = boot({ env: process.env, server: false, worker: true });
exitOnSignals(starting);
const running = await starting.catch(fail);
running.logger.info('worker started');
