import { sql, type Expression, type ExpressionBuilder, type UpdateObject } from 'kysely';
import type { AttemptOutcome, JobStatus, TerminalStatus } from '../contract/index.ts';
import type { Database, DbHandle, JobsTable, Tx } from '../db/index.ts';
import type { RemoteState } from './claimed-job.ts';
import type { JobError } from './decide.ts';
import type { Notifier } from '../lib/notifier.ts';
import { transactOne, type ChangeLog, type JobChange } from './changes.ts';
import { applyAsOneStatement, applyInSteps } from './recording.ts';

type JobSet = UpdateObject<Database, 'jobs'>;
type Eb = ExpressionBuilder<Database, 'jobs'>;

/** The named waiting sub-states inside `running` (stored in `jobs.waiting`). */
export const WAITING = { retry: 'retry', handedBack: 'handed_back', providerRateLimited: 'provider_rate_limited' } as const;

/**
 * One transition: where it may start, whether only the lease holder may make it, the columns it
 * sets, what it does to the open attempt in the history (`start` opens one, `task` notes its
 * provider task id, an outcome closes it), and whether clients can see it (then `version` is bumped and the change published).
 */
interface Rule<A> {
  from: readonly JobStatus[];
  leased: boolean;
  to?: TerminalStatus;
  visible: boolean;
  attempt?: 'start' | 'task' | Exclude<AttemptOutcome, 'running'>;
  /** Only rows that are due (`run_at <= now`), for claims. */
  due?: boolean;
  /** Only rows nobody holds that never reached a provider and may move (rerouting). */
  movable?: boolean;
  set: (args: A, eb: Eb) => JobSet;
}

const rule = <A>(r: Rule<A & { now: number }>) => r;

/** What every settlement sets: the terminal state and nothing left to wait for. */
const ended = (status: TerminalStatus, a: { now: number; error?: JobError | null; outputIds?: readonly string[] }): JobSet => ({
  status,
  error_code: a.error?.code ?? null,
  error_message: a.error?.message ?? null,
  output_asset_ids: JSON.stringify(a.outputIds ?? []),
  progress: status === 'succeeded' ? 100 : undefined,
  run_at: null,
  lease_owner: null,
  waiting: null,
  waiting_until: null,
  updated_at: a.now,
  finished_at: a.now,
});

type Settle = { error?: JobError | null; outputIds?: readonly string[] };

/**
 * Every change a job row can go through, declared once: guard, effect and history. `applyTransition`
 * is the only code that updates `jobs` (test/table-writers.test.ts fails otherwise).
 * `leased`: only the worker holding the job's lease may make it (its id is in the where clause),
 * so a worker that lost its job (cancelled, expired, taken over) changes nothing.
 */
export const TRANSITIONS = {
  /** A worker takes a job: a queued one, or a running one that is due (lease lapsed, handed back, retry time reached). */
  claim: rule<{ workerId: string; leaseMs: number }>({
    from: ['queued', 'running'],
    leased: false,
    due: true,
    visible: true,
    attempt: 'start',
    set: (a, eb) => ({
      status: 'running',
      lease_owner: a.workerId,
      run_at: a.now + a.leaseMs,
      attempts: eb('attempts', '+', 1),
      started_at: eb.fn.coalesce('started_at', eb.val(a.now)),
      progress: eb.fn.coalesce('progress', eb.val(0)),
      waiting: null,
      waiting_until: null,
      updated_at: a.now,
    }),
  }),
  /** The worker extends its lease (nothing a client sees). */
  renew: rule<{ leaseMs: number }>({ from: ['running'], leased: true, visible: false, set: (a) => ({ run_at: a.now + a.leaseMs }) }),
  progress: rule<{ progress: number }>({ from: ['running'], leased: true, visible: true, set: (a) => ({ progress: a.progress, updated_at: a.now }) }),
  /** Remote resume state: `submitted` means a task exists at the provider (the attempt records its id). */
  saveEngineState: rule<{ state: RemoteState | null }>({
    from: ['running'],
    leased: true,
    visible: true,
    attempt: 'task',
    set: (a) => ({ engine_state: a.state === null ? null : JSON.stringify(a.state), updated_at: a.now }),
  }),
  /** The worker waits for a provider's rate limit until `until` (null: the wait is over). */
  waitAtProvider: rule<{ until: number | null }>({
    from: ['running'],
    leased: true,
    visible: true,
    set: (a) => ({ waiting: a.until === null ? null : WAITING.providerRateLimited, waiting_until: a.until, updated_at: a.now }),
  }),
  /** The worker gives the job back at once (shutdown): the attempt does not count. */
  handBack: rule<Record<never, never>>({
    from: ['running'],
    leased: true,
    visible: true,
    attempt: 'handed_back',
    set: (a, eb) => ({ lease_owner: null, run_at: a.now, attempts: eb('attempts', '-', 1), waiting: WAITING.handedBack, waiting_until: null, updated_at: a.now }),
  }),
  /** The worker gives the job back to be tried again after a delay (a transient failure): the attempt counts. */
  retryLater: rule<{ delayMs: number; error: JobError | null }>({
    from: ['running'],
    leased: true,
    visible: true,
    attempt: 'retry',
    set: (a) => ({ lease_owner: null, run_at: a.now + a.delayMs, waiting: WAITING.retry, waiting_until: null, updated_at: a.now }),
  }),
  /** The worker moves the job (not yet started at any provider) to the next engine, claimable at once: the attempt does not count. */
  reroute: rule<{ engine: string; error: JobError | null }>({
    from: ['running'],
    leased: true,
    visible: true,
    attempt: 'rerouted',
    set: (a, eb) => ({
      engine: a.engine,
      engine_state: null,
      lease_owner: null,
      run_at: a.now,
      attempts: eb('attempts', '-', 1),
      waiting: null,
      waiting_until: null,
      updated_at: a.now,
    }),
  }),
  /**
   * Jobs waiting for an engine whose circuit is open move to the next engine (nobody holds them);
   * queued ones keep their distance from the head of the fair order (`shift`, fair-order.ts).
   */
  rerouteWaiting: rule<{ engine: string; shift: number }>({
    from: ['queued', 'running'],
    leased: false,
    movable: true,
    visible: true,
    set: (a, eb) => ({
      engine: a.engine,
      run_at: a.now,
      waiting: null,
      waiting_until: null,
      updated_at: a.now,
      fair_key: eb
        .case()
        .when('status', '=', sql.lit('queued'))
        .then(eb('fair_key', '+', a.shift))
        .else(eb.ref('fair_key'))
        .end(),
    }),
  }),
  /** A re-enabled client's queued jobs take turns again (fair-order.ts `fairKeysResume`): nothing a client sees. */
  resumeTurns: rule<{ shift: number }>({ from: ['queued'], leased: false, visible: false, set: (a, eb) => ({ fair_key: eb('fair_key', '+', a.shift) }) }),
  /** The worker's verdict on its own run. */
  succeed: rule<Settle>({ from: ['running'], leased: true, to: 'succeeded', visible: true, attempt: 'succeeded', set: (a) => ended('succeeded', a) }),
  fail: rule<Settle>({ from: ['running'], leased: true, to: 'failed', visible: true, attempt: 'failed', set: (a) => ended('failed', a) }),
  expire: rule<Settle>({ from: ['running'], leased: true, to: 'expired', visible: true, attempt: 'expired', set: (a) => ended('expired', a) }),
  /** Deadlines noticed by the sweep, whoever holds the job (its worker aborts at its next lease check). */
  expireQueued: rule<Settle>({ from: ['queued'], leased: false, to: 'expired', visible: true, set: (a) => ended('expired', a) }),
  expireRunning: rule<Settle>({ from: ['running'], leased: false, to: 'expired', visible: true, attempt: 'expired', set: (a) => ended('expired', a) }),
  /** The client cancels. */
  cancel: rule<Settle>({ from: ['queued', 'running'], leased: false, to: 'cancelled', visible: true, attempt: 'cancelled', set: (a) => ended('cancelled', a) }),
};

export type Transition = keyof typeof TRANSITIONS;
export type ArgsOf<T extends Transition> = (typeof TRANSITIONS)[T] extends Rule<infer A> ? A : never;
/** The transitions that end a job (each declares its terminal status as `to`). */
export type Settlement = 'succeed' | 'fail' | 'expire' | 'expireQueued' | 'expireRunning' | 'cancel';

/** Which rows a transition is tried on (the rule's guard narrows them further). */
export type JobTarget =
  | {
      jobId: string | readonly string[];
      /** The worker making a leased transition. */
      leaseOwner?: string;
      /** Only this client's job (the client's own cancel). */
      clientId?: string;
    }
  /** The one row a claim's candidate query picks (queue/claim.ts). */
  | { pick: Expression<string> }
  /** Every row of an engine, optionally of one capability or client (rerouting, resumed turns). */
  | { engine: string; capability?: string; clientId?: string };

/** A transaction in which transitions run; the changes clients can see are published once it commits. */
export interface Step {
  tx: Tx;
  dialect: DbHandle['dialect'];
  /** Filled by `applyTransition`: what to announce in this process after the commit. */
  log: ChangeLog;
}

/**
 * Runs one transition in the step's transaction: the update restricted to the rows on which it may
 * happen, its effect, its history, and the change record (see changes.ts) — on PostgreSQL all in
 * one statement (recording.ts). Returns the rows it changed (empty: it was not allowed —
 * cancelled meanwhile, lease lost, already finished).
 */
export async function applyTransition<T extends Transition>(step: Step, name: T, target: JobTarget, given: ArgsOf<T>): Promise<JobsTable[]> {
  const r = TRANSITIONS[name] as Rule<ArgsOf<T>>;
  const args = given as ArgsOf<T> & { now: number; error?: JobError | null; state?: RemoteState | null };
  let query = step.tx.updateTable('jobs').where('status', 'in', r.from);
  if ('jobId' in target) {
    query = typeof target.jobId === 'string' ? query.where('id', '=', target.jobId) : query.where('id', 'in', target.jobId);
    if (target.clientId !== undefined) query = query.where('client_id', '=', target.clientId);
    if (r.leased) {
      if (target.leaseOwner === undefined) throw new Error(`transition ${name} needs the lease owner`);
      query = query.where('lease_owner', '=', target.leaseOwner);
    }
  } else if ('pick' in target) {
    query = query.where('id', '=', target.pick);
  } else {
    query = query.where('engine', '=', target.engine);
    if (target.capability !== undefined) query = query.where('capability', '=', target.capability);
    if (target.clientId !== undefined) query = query.where('client_id', '=', target.clientId);
  }
  if (r.leased && !('jobId' in target)) throw new Error(`transition ${name} needs a job id and its lease owner`);
  if (r.due) query = query.where('run_at', '<=', args.now);
  if (r.movable) query = query.where('engine_pinned', '=', 0).where('lease_owner', 'is', null).where('engine_state', 'is', null);
  const update = query.set((eb) => ({ ...r.set(args, eb), ...(r.visible ? { version: eb('version', '+', 1) } : {}) })).returningAll();
  const recording = { attempt: r.attempt, visible: r.visible, now: args.now, error: args.error ?? null, state: args.state ?? null };
  const rows = step.dialect === 'postgres' ? await applyAsOneStatement(step.tx, update, recording) : await applyInSteps(step, update, recording);
  if (r.visible) step.log.push(...rows.map((row): JobChange => [row.id, Number(row.version)]));
  return rows;
}

/** One transition in a transaction of its own, announced in this process once it commits. */
export function transition<T extends Transition>(handle: DbHandle, notifier: Notifier | null, name: T, target: JobTarget, args: ArgsOf<T>): Promise<JobsTable[]> {
  return transactOne(handle, notifier, (step) => applyTransition(step, name, target, args));
}
