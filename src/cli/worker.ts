import { boot } from './boot.ts';
import { exitOnSignals, fail } from './signals.ts';

// `npm run worker`: runs jobs and sends webhooks; any number may share one database.
const running = await boot({ env: process.env, server: false, worker: true }).catch(fail);
exitOnSignals(running);
running.logger.info('worker started');
