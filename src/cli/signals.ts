import type { Running } from './boot.ts';

/**
 * Past the shutdown grace period, this much more for the worker to hand its jobs back and the
 * database to close; then the process exits anyway (the leases of anything still held lapse).
 */
const STOP_MARGIN_MS = 15_000;

/**
 * SIGTERM/SIGINT: stop listening, let in-flight requests finish (ZHINIAN_SHUTDOWN_GRACE_SECONDS),
 * close what is left, hand unfinished jobs back, exit. A second signal exits at once.
 */
export function exitOnSignals(running: Running): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(1);
    stopping = true;
    running.logger.info({ signal }, 'shutting down');
    setTimeout(() => {
      running.logger.error('shutdown did not finish in time; exiting');
      process.exit(1);
    }, running.config.shutdownGraceMs + STOP_MARGIN_MS).unref();
    running
      .stop()
      .then(() => process.exit(0))
      .catch((error) => {
        running.logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      });
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

export function fail(error: unknown): never {
  console.error(error instanceof Error ? error.message : String(error));
  process.exit(1);
}
