import { sql } from 'kysely';
import { withTransaction, type DbHandle, type JobsTable } from '../db/index.ts';
import { JOB_CHANNEL_SQL } from '../db/pg-notify.ts';
import type { Notifier } from '../lib/notifier.ts';
import type { Step } from './transitions.ts';

/** A job and the version a transition gave it. */
export type JobChange = readonly [jobId: string, version: number];
export type ChangeLog = JobChange[];

/** Ids per NOTIFY: its payload must stay under PostgreSQL's 8,000 bytes. */
const NOTIFY_BATCH = 100;

/**
 * Records what a transition changed, in its transaction, so every process learns of it exactly
 * when it commits (never before, never lost by a crash in between):
 * - PostgreSQL: a NOTIFY `{ e: 'j', c: [[jobId, version], …] }` on the schema's channel
 *   (db/pg-notify.ts), which PostgreSQL delivers at commit;
 * - SQLite: rows in `job_changes`, which each instance polls with one query (live/feed.ts).
 * The process that made the change also announces it locally after the commit (`transact`).
 */
export async function publishChanges(step: Step, rows: readonly JobsTable[]): Promise<void> {
  const changes = rows.map((r): JobChange => [r.id, Number(r.version)]);
  step.log.push(...changes);
  for (let i = 0; i < changes.length; i += NOTIFY_BATCH) {
    const batch = changes.slice(i, i + NOTIFY_BATCH);
    if (step.dialect === 'postgres') {
      await sql`select pg_notify(${JOB_CHANNEL_SQL}, ${JSON.stringify({ e: 'j', c: batch })})`.execute(step.tx);
    } else {
      const at = Date.now();
      await step.tx
        .insertInto('job_changes')
        .values(batch.map(([job_id, version]) => ({ job_id, version, at })))
        .execute();
    }
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
