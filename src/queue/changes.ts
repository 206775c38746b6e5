import { withTransaction, type DbHandle } from '../db/index.ts';
import type { Notifier } from '../lib/notifier.ts';
import type { Step } from './transitions.ts';

/** A job and the version a transition gave it. */
export type JobChange = readonly [jobId: string, version: number];
export type ChangeLog = JobChange[];

/**
 * Runs `fn` in one transaction whose transitions are announced in this process once it commits.
 * Every transition runs in one (also a single one: its history and change record go with it).
 */
export async function transact<R>(handle: DbHandle, notifier: Notifier | null, fn: (step: Step) => Promise<R>): Promise<R> {
  let log: ChangeLog = [];
  const result = await withTransaction(handle, (tx) => {
    log = []; // a retried transaction starts over
    return fn({ tx, dialect: handle.dialect, log });
  });
  for (const [jobId, version] of log) notifier?.jobChanged(jobId, version);
  return result;
}

/**
 * `transact` for work that makes one transition and otherwise only reads: on PostgreSQL that
 * transition is one statement, atomic by itself, so no BEGIN/COMMIT round trips are spent on it.
 */
export async function transactOne<R>(handle: DbHandle, notifier: Notifier | null, fn: (step: Step) => Promise<R>): Promise<R> {
  if (handle.dialect !== 'postgres') return transact(handle, notifier, fn);
  const log: ChangeLog = [];
  const result = await fn({ tx: handle.db, dialect: handle.dialect, log });
  for (const [jobId, version] of log) notifier?.jobChanged(jobId, version);
  return result;
}
