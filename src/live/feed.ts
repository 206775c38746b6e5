import type { Logger } from 'pino';
import type { DbHandle } from '../db/index.ts';
import type { Notifier } from '../lib/notifier.ts';

/**
 * Called when a watched job changed: with its new version, or with null when changes may have been
 * missed (read it again). A change can arrive twice (locally and through the database): listeners
 * compare versions.
 */
type JobChangeListener = (version: number | null) => void;

export interface JobFeed {
  /**
   * Watches one job. Resolves once changes committed from now on are sure to be reported (on
   * SQLite the poller knows where the change log ends), so a read after it misses nothing.
   */
  subscribe(jobId: string, listener: JobChangeListener): Promise<() => void>;
  /** Listeners registered now (tests: streams that closed leave none behind). */
  listenerCount(): number;
  close(): void;
}

export interface JobFeedOptions {
  handle: DbHandle;
  notifier: Notifier;
  logger: Logger;
  /** SQLite: how often the change log is read while anyone watches (≤ 250 ms). */
  pollMs?: number;
}

/** Changes read per query; more waiting means the next query runs at once. */
const POLL_BATCH = 500;
const DEFAULT_POLL_MS = 200;

/**
 * One per instance: every watcher of a job (event streams, `Prefer: wait`) learns of its changes
 * here, whichever process made them.
 * - This process's own transitions: the notifier's local `jobChanged`.
 * - PostgreSQL: other processes' NOTIFYs, which `db/pg-notify.ts` turns into the same local event
 *   (and a `resync` when the LISTEN connection comes back after an outage).
 * - SQLite: ONE poller for all watchers, running only while someone watches: one query on
 *   `job_changes` per tick, from the last seq seen (queue/recording.ts writes it; the worker's
 *   purge prunes it).
 */
export function createJobFeed(opts: JobFeedOptions): JobFeed {
  const listeners = new Map<string, Set<JobChangeListener>>();
  let count = 0;
  const pollMs = Math.min(opts.pollMs ?? DEFAULT_POLL_MS, 250);

  const deliver = (jobId: string, version: number | null) => {
    const set = listeners.get(jobId);
    if (set) for (const listener of [...set]) listener(version);
  };
  const everyone = () => {
    for (const set of [...listeners.values()]) for (const listener of [...set]) listener(null);
  };
  const offChanged = opts.notifier.on('jobChanged', deliver);
  const offResync = opts.notifier.on('resync', everyone);

  const poller = opts.handle.dialect === 'sqlite' ? createPoller(opts.handle, pollMs, deliver, everyone, opts.logger) : null;

  return {
    async subscribe(jobId, listener) {
      const set = listeners.get(jobId) ?? new Set();
      listeners.set(jobId, set);
      set.add(listener);
      count++;
      let done = false;
      const unsubscribe = () => {
        if (done) return;
        done = true;
        count--;
        const current = listeners.get(jobId);
        current?.delete(listener);
        if (current?.size === 0) listeners.delete(jobId);
        if (count === 0) poller?.stop();
      };
      try {
        await poller?.start();
      } catch (error) {
        unsubscribe();
        throw error;
      }
      return unsubscribe;
    },
    listenerCount: () => count,
    close() {
      offChanged();
      offResync();
      poller?.stop();
      listeners.clear();
      count = 0;
    },
  };
}

interface Poller {
  /** Starts polling unless it runs; resolves once the position in the change log is known. */
  start(): Promise<void>;
  stop(): void;
}

function createPoller(handle: DbHandle, pollMs: number, deliver: (jobId: string, version: number) => void, everyone: () => void, logger: Logger): Poller {
  let running: Promise<void> | null = null;
  let timer: NodeJS.Timeout | null = null;
  let after = 0;
  let failing = false;
  /** Bumped by stop: a tick or start of an earlier run does nothing more. */
  let generation = 0;

  const tick = async (gen: number) => {
    timer = null;
    if (gen !== generation) return;
    let full = false;
    try {
      const rows = await handle.db.selectFrom('job_changes').select(['seq', 'job_id', 'version']).where('seq', '>', after).orderBy('seq').limit(POLL_BATCH).execute();
      for (const row of rows) {
        after = Number(row.seq);
        deliver(row.job_id, Number(row.version));
      }
      full = rows.length === POLL_BATCH;
      if (failing) {
        failing = false;
        // The log keeps about a minute: a longer outage may have lost changes, so everyone reads once.
        everyone();
      }
    } catch (error) {
      if (!failing) logger.warn({ err: error }, 'reading the job change log failed; retrying');
      failing = true;
    }
    if (gen === generation) {
      timer = setTimeout(() => void tick(gen), full ? 0 : pollMs);
      timer.unref();
    }
  };

  return {
    start() {
      const gen = generation;
      running ??= (async () => {
        const row = await handle.db
          .selectFrom('job_changes')
          .select((eb) => eb.fn.max('seq').as('seq'))
          .executeTakeFirst();
        if (gen !== generation) return;
        after = Number(row?.seq ?? 0);
        timer = setTimeout(() => void tick(gen), pollMs);
        timer.unref();
      })().catch((error) => {
        running = null;
        throw error;
      });
      return running;
    },
    stop() {
      generation++;
      running = null;
      if (timer) clearTimeout(timer);
      timer = null;
    },
  };
}
