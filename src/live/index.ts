export { createJobFeed } from './feed.ts';
export { createLiveStatus, visibleState, type LiveStatus, type ReadJob, type WatchedJob } from './live-status.ts';
export { waitUntilTerminal } from './wait.ts';
export { watchJob } from './watch.ts';
