import { withTransaction, type DbHandle, type JobsTable, type Tx } from '../db/index.ts';
import type { Notifier } from '../lib/notifier.ts';
import type { Step } from './transitions.ts';

/** A job and the version a transition gave it. */
export type JobChange = readonly [jobId: string, version: number];
export type ChangeLog = JobChange[];

/**
 * A transition's change is recorded in its own transaction, so every process learns of it exactly
 * when it commits (never before, never lost by a crash in between): on PostgreSQL a NOTIFY
 * `{ e: 'j', c: [[jobId, version], …] }` on the schema's channel (db/pg-notify.ts), sent by the
 * transition's statement (transition-statement.ts) and delivered at commit; on SQLite rows in
 * `job_changes` (below), which each instance polls with one query. The process that made the
 * change also announces it locally after the commit (`transact`).
 */
export async function recordChanges(tx: Tx, rows: readonly JobsTable[]): Promise<void> {
  const at = Date.now();
  // In slices: a statement has a bounded number of parameters.
  for (let i = 0; i < rows.length; i += 500) {
    await tx
      .insertInto('job_changes')
      .values(rows.slice(i, i + 500).map((r) => ({ job_id: r.id, version: Number(r.version), at })))
      .execute();
  }
}

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
