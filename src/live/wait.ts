import { isTerminal, type Job } from '../contract/index.ts';
import type { JobFeed } from './feed.ts';
import type { ReadJob } from './live-status.ts';
import { watchJob } from './watch.ts';

/**
 * The job once it is terminal, or as it is after `ms` or when `signal` aborts, whichever comes
 * first. Change notices come from the instance's feed; between them nothing is read, so no
 * database connection is held while waiting.
 */
export async function waitUntilTerminal(feed: JobFeed, job: Job, read: ReadJob, ms: number, signal: AbortSignal, onError: (error: unknown) => void): Promise<Job> {
  if (isTerminal(job.status) || signal.aborted) return job;
  let latest = job;
  let release = () => {};
  const done = new Promise<void>((resolve) => {
    release = resolve;
  });
  const watch = await watchJob(
    feed,
    job.id,
    read,
    (state) => {
      latest = state.job;
      if (isTerminal(latest.status)) release();
    },
    (error) => {
      onError(error);
      release();
    },
  );
  if (watch.first) latest = watch.first.job;
  const timer = setTimeout(release, ms);
  signal.addEventListener('abort', release, { once: true });
  try {
    if (!isTerminal(latest.status)) await done;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', release);
    watch.stop();
  }
  return latest;
}
