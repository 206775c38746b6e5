import { type RawBuilder, sql, type UpdateQueryBuilder } from 'kysely';
import type { AttemptOutcome } from '../contract/index.ts';
import type { Database, DbHandle, JobsTable, Tx } from '../db/index.ts';
import { JOB_CHANNEL_SQL } from '../db/pg-notify.ts';
import { parseEngineState, type RemoteState } from './claimed-job.ts';
import type { JobError } from './decide.ts';
import type { Step } from './transitions.ts';

type JobUpdate = UpdateQueryBuilder<Database, 'jobs', 'jobs', JobsTable>;

/** What a transition records besides the row: its history effect and whether it is published. */
export interface Recording {
  attempt?: 'start' | 'task' | Exclude<AttemptOutcome, 'running'>;
  visible: boolean;
  now: number;
  error: JobError | null;
  state: RemoteState | null;
}

/** Changes per NOTIFY: its payload must stay under PostgreSQL's 8,000 bytes. */
const NOTIFY_BATCH = 100;

/**
 * How a transition is recorded besides its update of `jobs` (transitions.ts): its history
 * (`job_attempts`) and its change record — the one writer of both tables, on each backend.
 */

/**
 * A transition's change is recorded in its own transaction, so every process learns of it exactly
 * when it commits (never before, never lost by a crash in between): on PostgreSQL a NOTIFY
 * `{ e: 'j', c: [[jobId, version], …] }` on the schema's channel (db/pg-notify.ts), sent by the
 * transition's statement (transition-statement.ts) and delivered at commit; on SQLite rows in
 * `job_changes` (below), which each instance polls with one query. The process that made the
 * change also announces it locally after the commit (`transact`).
 */
async function recordChanges(tx: Tx, rows: readonly JobsTable[]): Promise<void> {
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
 * A transition on PostgreSQL as ONE statement: the update of `jobs` and, in data-modifying CTEs of
 * the same statement, its history and its NOTIFY (delivered at commit). The same effects as the
 * SQLite path in transitions.ts, without a round trip each: a claim or a progress write costs one
 * statement, as it did before the history existed.
 */
export async function applyAsOneStatement(tx: Tx, update: JobUpdate, rec: Recording): Promise<JobsTable[]> {
  const ctes: RawBuilder<unknown>[] = [sql`changed as (${update})`];
  const close = (outcome: AttemptOutcome, error: JobError | null) =>
    sql`closed as (update job_attempts set outcome = ${outcome}, ended_at = ${rec.now}, error_code = ${error?.code ?? null}, error_message = ${error?.message ?? null}
      where outcome = 'running' and job_id in (select id from changed))`;
  if (rec.attempt === 'start') {
    ctes.push(close('lease_lost', null));
    // A task already submitted (a takeover) is the new attempt's too.
    ctes.push(sql`opened as (insert into job_attempts (job_id, n, engine, worker_id, started_at, ended_at, outcome, error_code, error_message, provider_task_id)
      select c.id, (select coalesce(max(a.n), 0) + 1 from job_attempts a where a.job_id = c.id), c.engine, coalesce(c.lease_owner, ''), ${rec.now}, null, 'running', null, null,
        case when c.engine_state::jsonb ->> 'phase' = 'submitted' then c.engine_state::jsonb -> 'handle' ->> 'taskId' end
      from changed c)`);
  } else if (rec.attempt === 'task') {
    if (rec.state?.phase === 'submitted') {
      ctes.push(sql`noted as (update job_attempts set provider_task_id = ${rec.state.handle.taskId} where outcome = 'running' and job_id in (select id from changed))`);
    }
  } else if (rec.attempt) {
    ctes.push(close(rec.attempt, rec.error));
  }
  if (!rec.visible) {
    const { rows } = await sql<JobsTable>`with ${sql.join(ctes)} select changed.* from changed`.execute(tx);
    return rows;
  }
  // The payload as JSON.stringify writes it (job ids need no escaping). A SELECT in WITH runs only
  // when read: the cross join reads it (one row, so the answer is `changed`'s rows).
  ctes.push(sql`notified as (
    select pg_notify(${JOB_CHANNEL_SQL}, '{"e":"j","c":[' || string_agg('["' || id || '",' || version || ']', ',' order by i) || ']}')
    from (select id, version, row_number() over () - 1 as i from changed) numbered group by i / ${NOTIFY_BATCH})`);
  const { rows } = await sql<JobsTable>`with ${sql.join(ctes)} select changed.* from changed cross join (select count(*) from notified) published`.execute(tx);
  return rows;
}

/** SQLite (in process, a statement costs microseconds): the update, then its history and change record, in the step's transaction. */
export async function applyInSteps(step: Step, update: JobUpdate, rec: Recording): Promise<JobsTable[]> {
  const rows = await update.execute();
  if (rows.length === 0) return rows;
  if (rec.attempt === 'start') await startAttempts(step.tx, rows, rec.now);
  else if (rec.attempt === 'task') await noteProviderTask(step.tx, rows, rec.state);
  else if (rec.attempt) await endAttempts(step.tx, rows, rec.attempt, rec.now, rec.error);
  if (rec.visible) await recordChanges(step.tx, rows);
  return rows;
}

/** Opens an attempt for each claimed row; one still open belonged to a worker whose lease lapsed. */
async function startAttempts(tx: Tx, rows: JobsTable[], now: number): Promise<void> {
  // Only a job started before this claim can have an attempt still open (its worker's lease lapsed).
  const startedBefore = rows.filter((r) => Number(r.started_at) < now);
  if (startedBefore.length > 0) await endAttempts(tx, startedBefore, 'lease_lost', now, null);
  for (const row of rows) {
    const state = parseEngineState(row.engine_state);
    await tx
      .insertInto('job_attempts')
      .values((eb) => ({
        job_id: row.id,
        n: eb.selectFrom('job_attempts').select(sql<number>`coalesce(max(n), 0) + 1`.as('n')).where('job_id', '=', row.id),
        engine: row.engine,
        worker_id: row.lease_owner ?? '',
        started_at: now,
        ended_at: null,
        outcome: 'running',
        error_code: null,
        error_message: null,
        provider_task_id: state?.phase === 'submitted' ? state.handle.taskId : null,
      }))
      .execute();
  }
}

/** The open attempt (outcome `running`) of each row's job: at most one per job. */
const openAttempts = (tx: Tx, rows: readonly JobsTable[]) =>
  tx
    .updateTable('job_attempts')
    .where(
      'job_id',
      'in',
      rows.map((r) => r.id),
    )
    .where('outcome', '=', 'running');

async function endAttempts(tx: Tx, rows: JobsTable[], outcome: AttemptOutcome, now: number, error: JobError | null): Promise<void> {
  await openAttempts(tx, rows)
    .set({ outcome, ended_at: now, error_code: error?.code ?? null, error_message: error?.message ?? null })
    .execute();
}

async function noteProviderTask(tx: Tx, rows: JobsTable[], state: RemoteState | null): Promise<void> {
  if (state?.phase === 'submitted') await openAttempts(tx, rows).set({ provider_task_id: state.handle.taskId }).execute();
}

/** How long SQLite's job change log keeps a change: far longer than any reader's poll interval. */
const JOB_CHANGES_KEEP_MS = 60_000;
const PRUNE_BATCH = 1000;
const PRUNE_BATCHES = 10;

/**
 * Prunes SQLite's job change log (`recordChanges`, read by live/feed.ts), oldest first, in short
 * transactions so writers are never held up for long. Run by every worker's sweep, each second;
 * PostgreSQL keeps no such log.
 */
export async function pruneJobChanges(handle: DbHandle, now: number): Promise<void> {
  if (handle.dialect !== 'sqlite') return;
  for (let i = 0; i < PRUNE_BATCHES; i++) {
    const oldest = handle.db
      .selectFrom('job_changes')
      .select('seq')
      .where('at', '<', now - JOB_CHANGES_KEEP_MS)
      .orderBy('seq')
      .limit(PRUNE_BATCH);
    const result = await handle.db.deleteFrom('job_changes').where('seq', 'in', oldest).executeTakeFirst();
    if (Number(result.numDeletedRows) < PRUNE_BATCH) return;
  }
}
