import type { JobFeed } from './feed.ts';
import type { ReadJob, WatchedJob } from './live-status.ts';

export interface JobWatch {
  /** The job as read once the subscription was in place (null: gone, or not the caller's). */
  first: WatchedJob | null;
  stop(): void;
}

/**
 * Watches one job: `onState` gets every newer state read after a change notice (never a version
 * already seen, never an older one; reads never overlap). The first state is read once the
 * subscription is in place, so nothing committed in between is missed. Reads are single short
 * queries: a watcher holds no database connection while it waits.
 */
export async function watchJob(feed: JobFeed, jobId: string, read: ReadJob, onState: (state: WatchedJob) => void, onError: (error: unknown) => void): Promise<JobWatch> {
  let seen = -1;
  let reading = false;
  let again = false;
  let stopped = false;
  /** Notices that came while the first read ran: looked at once it is done. */
  let early: { version: number | null } | null = null;

  const readNow = async (): Promise<void> => {
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    try {
      do {
        again = false;
        const state = await read();
        if (stopped) return;
        if (state && state.version > seen) {
          seen = state.version;
          onState(state);
        }
      } while (again && !stopped);
    } catch (error) {
      if (!stopped) onError(error);
    } finally {
      reading = false;
    }
  };
  const noticed = (version: number | null) => {
    if (stopped) return;
    if (version !== null && version <= seen) return;
    void readNow();
  };

  let ready = false;
  const stopFeed = await feed.subscribe(jobId, (version) => {
    if (ready) return noticed(version);
    early = { version: early === null || early.version === null || version === null ? version : Math.max(early.version, version) };
  });
  let first: WatchedJob | null;
  try {
    first = await read();
  } catch (error) {
    stopFeed();
    throw error;
  }
  if (first) seen = first.version;
  ready = true;
  const pending = early as { version: number | null } | null;
  if (pending) noticed(pending.version);
  return {
    first,
    stop() {
      stopped = true;
      stopFeed();
    },
  };
}
