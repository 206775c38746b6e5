import type { Running } from './boot.ts';

/**
 * Past the shutdown grace period, this much more for the worker to hand its jobs back and the
 * database to close; then the process exits anyway (the leases of anything still held lapse).
 */
const STOP_MARGIN_MS = 15_000;

/**
 * Signals this soon after the first are the same request to stop, not an insistence: Ctrl-C on
 * `npm start` reaches us twice within milliseconds (the terminal signals the whole process
 * group, and npm forwards its own copy to its child). Counting the copy as a second signal
 * would exit before the worker hands its jobs back (each then waits out a lease and loses an attempt).
 */
const REPEAT_WINDOW_MS = 1_500;

/**
 * SIGTERM/SIGINT: stop listening, let in-flight requests finish (ZHINIAN_SHUTDOWN_GRACE_SECONDS),
 * close what is left, hand unfinished jobs back, exit. A second signal, sent after
 * REPEAT_WINDOW_MS, exits at once.
 */
export function exitOnSignals(running: Running): void {
  let firstAt: number | null = null;
  const onSignal = (signal: NodeJS.Signals) => {
    if (firstAt !== null) {
      if (performance.now() - firstAt < REPEAT_WINDOW_MS) return void running.logger.info({ signal }, 'repeated signal: already shutting down');
      running.logger.warn({ signal }, 'second signal: exiting without finishing the shutdown');
      process.exit(1);
    }
    firstAt = performance.now();
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
