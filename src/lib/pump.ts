import { outageBackoffMs } from './retry-ladders.ts';

/**
 * Keeps up to `concurrency` tasks running: takes the next item when a slot is free, and when
 * there is none, waits for a wake-up or the poll interval, whichever comes first. Used by the
 * job worker and the webhook sender.
 */
export interface PumpOptions<T> {
  concurrency: number;
  pollIntervalMs: number;
  next: () => Promise<T | null>;
  run: (item: T) => Promise<void>;
  /** Subscribes to in-process wake-ups; returns an unsubscribe function. */
  subscribe?: (wake: () => void) => () => void;
  onError: (error: unknown) => void;
}

export interface Pump {
  /** Stops taking new items; resolves when the running ones have finished. */
  stop(): Promise<void>;
  readonly active: number;
  wake(): void;
}

export function startPump<T>(opts: PumpOptions<T>): Pump {
  let stopped = false;
  let active = 0;
  let wakeTimer: NodeJS.Timeout | null = null;
  let wakeResolve: (() => void) | null = null;
  let woken = false;
  const running = new Set<Promise<void>>();
  let loopDone: Promise<void>;
  let failures = 0;

  const wake = () => {
    woken = true;
    wakeResolve?.();
  };
  const unsubscribe = opts.subscribe?.(wake) ?? (() => {});

  const sleep = (ms = opts.pollIntervalMs, wakeable = true) =>
    new Promise<void>((resolve) => {
      if ((woken && wakeable) || stopped) return resolve();
      wakeResolve = wakeable ? resolve : () => stopped && resolve();
      wakeTimer = setTimeout(resolve, ms);
    }).finally(() => {
      if (wakeTimer) clearTimeout(wakeTimer);
      wakeTimer = null;
      wakeResolve = null;
    });

  async function loop(): Promise<void> {
    while (!stopped) {
      if (active >= opts.concurrency) {
        await Promise.race(running);
        continue;
      }
      woken = false;
      let item: T | null = null;
      try {
        item = await opts.next();
        failures = 0;
      } catch (error) {
        // The database is unreachable (or worse): back off. Wake-ups cannot cut the pause
        // short; stopping can.
        opts.onError(error);
        failures++;
        await sleep(outageBackoffMs(failures), false);
        continue;
      }
      if (item === null) {
        await sleep();
        continue;
      }
      active++;
      const task = opts
        .run(item)
        .catch(opts.onError)
        .finally(() => {
          active--;
          running.delete(task);
        });
      running.add(task);
    }
  }
  loopDone = loop();

  return {
    get active() {
      return active;
    },
    wake,
    async stop() {
      stopped = true;
      unsubscribe();
      wake();
      await loopDone;
      await Promise.all(running);
    },
  };
}
