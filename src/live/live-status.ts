import type { Job } from '../contract/index.ts';
import type { JobFeed } from './feed.ts';

/** A job as a watcher sees it: what clients are shown, and the version that names this state. */
export interface WatchedJob {
  job: Job;
  version: number;
}

/** Reads a job again (null: gone, or not the caller's). */
export type ReadJob = () => Promise<WatchedJob | null>;

/** Comment lines keep idle streams open through proxies (the contract: every 15 s). */
const KEEP_ALIVE_MS = 15_000;
/** Open event streams per client (or console user) on one instance; one more is answered 429. */
const MAX_STREAMS_PER_CLIENT = 100;

/** What the event streams and `Prefer: wait` of one instance share (wired in cli/boot.ts). */
export interface LiveStatus {
  feed: JobFeed;
  keepAliveMs: number;
  maxStreamsPerClient: number;
  /** Open streams per owner (`api:<client>`, `console:<user>`). */
  readonly open: Map<string, number>;
  /** Ends every open stream (shutdown: clients reconnect elsewhere with Last-Event-ID). */
  readonly closers: Set<() => void>;
}

export function createLiveStatus(feed: JobFeed, opts: { keepAliveMs?: number; maxStreamsPerClient?: number } = {}): LiveStatus {
  return {
    feed,
    keepAliveMs: opts.keepAliveMs ?? KEEP_ALIVE_MS,
    maxStreamsPerClient: opts.maxStreamsPerClient ?? MAX_STREAMS_PER_CLIENT,
    open: new Map(),
    closers: new Set(),
  };
}

/** What an event is sent for: a change of status, progress or why the job waits. */
export function visibleState(job: Job): string {
  return JSON.stringify([job.status, job.progress, job.statusDetail]);
}
