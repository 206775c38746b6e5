import { type RawBuilder, sql, type UpdateQueryBuilder } from 'kysely';
import type { AttemptOutcome } from '../contract/index.ts';
import type { Database, JobsTable, Tx } from '../db/index.ts';
import { JOB_CHANNEL_SQL } from '../db/pg-notify.ts';
import type { RemoteState } from './claimed-job.ts';
import type { JobError } from './decide.ts';

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
