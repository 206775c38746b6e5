import { EventEmitter } from 'node:events';

/**
 * Wake-ups between the parts of one process: the API tells an embedded worker that a job is
 * waiting (so it starts without a polling delay), that a job was cancelled (so its run aborts
 * at once), the outbox that a webhook is due, and the transitions everyone watching a job that
 * it changed. On SQLite separate processes fall back to
 * polling; on PostgreSQL `db/pg-notify.ts` carries the same events between processes.
 */
export interface Notifier {
  jobQueued(): void;
  jobCancelled(jobId: string): void;
  webhookDue(): void;
  /** A transition a client can see committed (queue/changes.ts `transact`); `version` is the job's new one. */
  jobChanged(jobId: string, version: number): void;
  /**
   * Changes may have been missed (the cross-process channel was down and is back): whoever
   * watches a job reads it again.
   */
  resync(): void;
  on(event: 'jobQueued' | 'webhookDue' | 'resync', listener: () => void): () => void;
  on(event: 'jobCancelled', listener: (jobId: string) => void): () => void;
  on(event: 'jobChanged', listener: (jobId: string, version: number) => void): () => void;
}

export function createNotifier(): Notifier {
  const emitter = new EventEmitter();
  emitter.setMaxListeners(0);
  return {
    jobQueued: () => emitter.emit('jobQueued'),
    jobCancelled: (jobId) => emitter.emit('jobCancelled', jobId),
    webhookDue: () => emitter.emit('webhookDue'),
    jobChanged: (jobId, version) => emitter.emit('jobChanged', jobId, version),
    resync: () => emitter.emit('resync'),
    on(event: string, listener: (...args: any[]) => void) {
      emitter.on(event, listener);
      return () => emitter.off(event, listener);
    },
  };
}
