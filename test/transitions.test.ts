// @backends sqlite,postgres
/**
 * Each transition of queue/transitions.ts on its own, against a bare database handle: from a job
 * in every state it may start from, its guard (refused elsewhere, with nothing changed), the
 * columns it sets (the whole row is compared), `attempts`, `version`, the attempt history, the
 * change record (job_changes on SQLite, NOTIFY on PostgreSQL) and the in-process announcement
 * after the commit. Jobs are inserted queued only; every other state is reached through the
 * transitions themselves. Times are passed in (`now`), so leases lapse without waiting.
 *
 * Also: no statement outside transitions.ts updates `jobs`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import pg from 'pg';
import { ATTEMPT_OUTCOMES } from '../src/contract/index.ts';
import { migrateToLatest, type DbHandle, type JobAttemptsTable, type JobsTable } from '../src/db/index.ts';
import { JOB_CHANNEL_SQL } from '../src/db/pg-notify.ts';
import { newId } from '../src/lib/ids.ts';
import { createNotifier } from '../src/lib/notifier.ts';
import { transact } from '../src/queue/changes.ts';
import type { RemoteState } from '../src/queue/claimed-job.ts';
import type { JobError } from '../src/queue/decide.ts';
import { applyTransition, transition, TRANSITIONS, type ArgsOf, type JobTarget, type Transition } from '../src/queue/transitions.ts';
import { openTestDb, queuedJobRow, tempDir, testEnv, waitFor } from './helpers.ts';

const T0 = Date.now();
const LEASE_MS = 60_000;
/** When most start states are tested: the first lease still holds, a handed-back job is due. */
const T1 = T0 + 2_000;
const ERROR: JobError = { code: 'provider_error', message: 'The provider is busy.' };

/**
 * The states a job can be in, each reached for real: queued by insertion (the way the API
 * enqueues), the rest through transitions (a running job is claimed).
 */
const STATES = [
  'queued',
  /** Queued, the client named the engine. */
  'pinned',
  /** Claimed by w1, lease valid. */
  'held',
  /** Claimed by w1, tested after the lease ran out (not taken over yet). */
  'lapsed',
  /** Claimed, then handed back (due at once). */
  'handedBack',
  /** Claimed, submitted at a provider, then handed back. */
  'submittedHandedBack',
  /** Given back to retry, not due yet. */
  'retryWaiting',
  /** Given back to retry, due. */
  'retryDue',
  'succeeded',
  'cancelled',
] as const;
type State = (typeof STATES)[number];

interface Start {
  id: string;
  engine: string;
  state: State;
  /** The lease holder, for leased transitions. */
  owner: string;
  /** When the transition is made. */
  now: number;
}

/** Every [job, version] a visible transition produced in this file, in order. */
const expectedChanges: [string, number][] = [];
/** What PostgreSQL's LISTEN delivered (channel of this schema). */
const notified: [string, number][] = [];
/** The NOTIFY payloads as sent. */
const payloads: string[] = [];
const notifier = createNotifier();
const announced: [string, number][] = [];
notifier.on('jobChanged', (id, version) => announced.push([id, version]));

let h: DbHandle;
let dataDir: string;
let listener: pg.Client | null = null;

/** One transition in its own transaction, as the queue makes them; remembers what it should have published. */
async function run<T extends Transition>(name: T, target: JobTarget, args: ArgsOf<T>): Promise<JobsTable[]> {
  const rows = await transition(h, notifier, name, target, args);
  if (TRANSITIONS[name].visible) for (const r of rows) expectedChanges.push([r.id, r.version]);
  return rows;
}

const taskIdOf = (engineState: string | null) => {
  const state = engineState === null ? null : (JSON.parse(engineState) as RemoteState);
  return state?.phase === 'submitted' ? state.handle.taskId : null;
};
const submitted = (engine: string, taskId: string): RemoteState => ({ phase: 'submitted', handle: { engine, taskId, submittedAt: new Date(T0).toISOString() } });

let created = 0;
async function insertQueued(fields: Partial<JobsTable> = {}): Promise<{ id: string; engine: string }> {
  const id = newId('job');
  // Its own engine: transitions aimed at an engine (reroutes, resumed turns) touch this job only.
  const engine = `eng-${id}`;
  created++;
  await h.db
    .insertInto('jobs')
    .values(queuedJobRow({ id, engine, created_at_us: T0 * 1000 + created, run_at: T0, ...fields }))
    .execute();
  return { id, engine };
}

async function claimAs(id: string, workerId: string, now: number): Promise<JobsTable> {
  const [row] = await run('claim', { pick: sql<string>`${id}` }, { workerId, leaseMs: LEASE_MS, now });
  assert.ok(row, `claim of ${id}`);
  return row;
}

/** A job in `state`, reached through the transitions. */
async function jobIn(state: State): Promise<Start> {
  const { id, engine } = await insertQueued(state === 'pinned' ? { engine_pinned: 1 } : {});
  const start: Start = { id, engine, state, owner: 'w1', now: T1 };
  const held = { jobId: id, leaseOwner: 'w1' };
  const at = T0 + 500;
  if (state === 'queued' || state === 'pinned') return start;
  if (state === 'cancelled') {
    await run('cancel', { jobId: id }, { now: at });
    return start;
  }
  await claimAs(id, 'w1', T0);
  switch (state) {
    case 'lapsed':
      return { ...start, now: T0 + LEASE_MS + 1_000 };
    case 'handedBack':
      await run('handBack', held, { now: at });
      break;
    case 'submittedHandedBack':
      await run('saveEngineState', held, { state: submitted(engine, `task-${id}`), now: at });
      await run('handBack', held, { now: at });
      break;
    case 'retryWaiting':
      await run('retryLater', held, { delayMs: 600_000, error: ERROR, now: at });
      break;
    case 'retryDue':
      await run('retryLater', held, { delayMs: 1_000, error: ERROR, now: at });
      break;
    case 'succeeded':
      await run('succeed', held, { outputIds: [], now: at });
      break;
  }
  return start;
}

const jobRow = (id: string) => h.db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
const attemptRows = (id: string) => h.db.selectFrom('job_attempts').selectAll().where('job_id', '=', id).orderBy('n').execute();

type Outcome = 'handed_back' | 'retry' | 'rerouted' | 'succeeded' | 'failed' | 'expired' | 'cancelled';

interface Case<T extends Transition> {
  /** States it is made from; every other state must refuse it. */
  allowed: readonly State[];
  visible: boolean;
  /** What it does to the attempt history: open one, close the open one with an outcome, or nothing. */
  history?: 'start' | Outcome;
  /** `attempts` after minus before. */
  attemptsDelta?: number;
  target?: (s: Start) => JobTarget;
  /** Targets that name the job but must not move it (another lease holder, another client). */
  wrongTargets?: (s: Start) => JobTarget[];
  args: (s: Start) => ArgsOf<T>;
  /** The columns it sets, from the row before (every other column must stay as it was). */
  sets: (before: JobsTable, args: ArgsOf<T> & { now: number }) => Partial<JobsTable>;
}

const HELD: State[] = ['held', 'lapsed'];
const NOBODY_HOLDS: State[] = ['handedBack', 'submittedHandedBack', 'retryWaiting', 'retryDue'];
const QUEUED: State[] = ['queued', 'pinned'];
const leasedTarget = (s: Start): JobTarget => ({ jobId: s.id, leaseOwner: s.owner });
const otherHolder = (s: Start): JobTarget[] => [{ jobId: s.id, leaseOwner: 'w-other' }];

/** What every settlement sets. */
const ended = (status: string, b: JobsTable, a: { now: number; error?: JobError | null; outputIds?: readonly string[] }): Partial<JobsTable> => ({
  status,
  error_code: a.error?.code ?? null,
  error_message: a.error?.message ?? null,
  output_asset_ids: JSON.stringify(a.outputIds ?? []),
  progress: status === 'succeeded' ? 100 : b.progress,
  run_at: null,
  lease_owner: null,
  waiting: null,
  waiting_until: null,
  updated_at: a.now,
  finished_at: a.now,
});

const leasedSettlement = <T extends 'succeed' | 'fail' | 'expire'>(status: string, history: Outcome, error: JobError | null): Case<T> => ({
  allowed: HELD,
  visible: true,
  history,
  target: leasedTarget,
  wrongTargets: otherHolder,
  args: (s) => ({ error, outputIds: status === 'succeeded' ? ['asset_out1'] : [], now: s.now }) as ArgsOf<T>,
  sets: (b, a) => ended(status, b, a),
});

const CASES: { [T in Transition]: Case<T> } = {
  claim: {
    allowed: ['queued', 'pinned', 'lapsed', 'handedBack', 'submittedHandedBack', 'retryDue'],
    visible: true,
    history: 'start',
    attemptsDelta: 1,
    target: (s) => ({ pick: sql<string>`${s.id}` }),
    args: (s) => ({ workerId: 'w2', leaseMs: LEASE_MS, now: s.now }),
    sets: (b, a) => ({
      status: 'running',
      lease_owner: a.workerId,
      run_at: a.now + a.leaseMs,
      started_at: b.started_at ?? a.now,
      progress: b.progress ?? 0,
      waiting: null,
      waiting_until: null,
      updated_at: a.now,
    }),
  },
  renew: {
    allowed: HELD,
    visible: false,
    target: leasedTarget,
    wrongTargets: otherHolder,
    args: (s) => ({ leaseMs: LEASE_MS, now: s.now }),
    sets: (_b, a) => ({ run_at: a.now + a.leaseMs }),
  },
  progress: {
    allowed: HELD,
    visible: true,
    target: leasedTarget,
    wrongTargets: otherHolder,
    args: (s) => ({ progress: 42, now: s.now }),
    sets: (_b, a) => ({ progress: 42, updated_at: a.now }),
  },
  saveEngineState: {
    allowed: HELD,
    visible: true,
    target: leasedTarget,
    wrongTargets: otherHolder,
    args: (s) => ({ state: submitted(s.engine, `task-save-${s.id}`), now: s.now }),
    sets: (_b, a) => ({ engine_state: JSON.stringify(a.state), updated_at: a.now }),
  },
  waitAtProvider: {
    allowed: HELD,
    visible: true,
    target: leasedTarget,
    wrongTargets: otherHolder,
    args: (s) => ({ until: s.now + 5_000, now: s.now }),
    sets: (_b, a) => ({ waiting: 'provider_rate_limited', waiting_until: a.until, updated_at: a.now }),
  },
  handBack: {
    allowed: HELD,
    visible: true,
    history: 'handed_back',
    attemptsDelta: -1,
    target: leasedTarget,
    wrongTargets: otherHolder,
    args: (s) => ({ now: s.now }),
    sets: (_b, a) => ({ lease_owner: null, run_at: a.now, waiting: 'handed_back', waiting_until: null, updated_at: a.now }),
  },
  retryLater: {
    allowed: HELD,
    visible: true,
    history: 'retry',
    target: leasedTarget,
    wrongTargets: otherHolder,
    args: (s) => ({ delayMs: 7_000, error: ERROR, now: s.now }),
    sets: (_b, a) => ({ lease_owner: null, run_at: a.now + a.delayMs, waiting: 'retry', waiting_until: null, updated_at: a.now }),
  },
  reroute: {
    allowed: HELD,
    visible: true,
    history: 'rerouted',
    attemptsDelta: -1,
    target: leasedTarget,
    wrongTargets: otherHolder,
    args: (s) => ({ engine: `${s.engine}-next`, error: ERROR, now: s.now }),
    sets: (_b, a) => ({ engine: a.engine, engine_state: null, lease_owner: null, run_at: a.now, waiting: null, waiting_until: null, updated_at: a.now }),
  },
  rerouteWaiting: {
    // Only jobs nobody holds, not pinned, never submitted.
    allowed: ['queued', 'handedBack', 'retryWaiting', 'retryDue'],
    visible: true,
    target: (s) => ({ engine: s.engine, capability: 'image.generate' }),
    wrongTargets: (s) => [{ engine: s.engine, capability: 'video.generate' }],
    args: (s) => ({ engine: `${s.engine}-next`, shift: 5, now: s.now }),
    sets: (b, a) => ({
      engine: a.engine,
      run_at: a.now,
      waiting: null,
      waiting_until: null,
      updated_at: a.now,
      fair_key: b.status === 'queued' ? b.fair_key + a.shift : b.fair_key,
    }),
  },
  resumeTurns: {
    allowed: QUEUED,
    visible: false,
    target: (s) => ({ engine: s.engine }),
    wrongTargets: (s) => [{ engine: s.engine, clientId: 'client-other' }],
    args: (s) => ({ shift: 7, now: s.now }),
    sets: (b, a) => ({ fair_key: b.fair_key + a.shift }),
  },
  succeed: leasedSettlement('succeeded', 'succeeded', null),
  fail: leasedSettlement('failed', 'failed', ERROR),
  expire: leasedSettlement('expired', 'expired', ERROR),
  expireQueued: {
    allowed: QUEUED,
    visible: true,
    target: (s) => ({ jobId: s.id }),
    args: (s) => ({ error: ERROR, now: s.now }),
    sets: (b, a) => ended('expired', b, a),
  },
  expireRunning: {
    // The sweep, whoever holds the job.
    allowed: [...HELD, ...NOBODY_HOLDS],
    visible: true,
    history: 'expired',
    target: (s) => ({ jobId: s.id }),
    args: (s) => ({ error: ERROR, now: s.now }),
    sets: (b, a) => ended('expired', b, a),
  },
  cancel: {
    allowed: [...QUEUED, ...HELD, ...NOBODY_HOLDS],
    visible: true,
    history: 'cancelled',
    target: (s) => ({ jobId: s.id, clientId: 'client-a' }),
    wrongTargets: (s) => [{ jobId: s.id, clientId: 'client-other' }],
    args: (s) => ({ error: null, now: s.now }),
    sets: (b, a) => ended('cancelled', b, a),
  },
};

const STATUS_OF: Record<State, string> = {
  queued: 'queued',
  pinned: 'queued',
  held: 'running',
  lapsed: 'running',
  handedBack: 'running',
  submittedHandedBack: 'running',
  retryWaiting: 'running',
  retryDue: 'running',
  succeeded: 'succeeded',
  cancelled: 'cancelled',
};

/** The history after `name` from `before`, as the contract describes it. */
function expectedHistory(
  c: Case<Transition>,
  name: Transition,
  before: JobAttemptsTable[],
  after: JobsTable,
  args: { now: number; error?: JobError | null; workerId?: string },
  start: Start,
) {
  const rows = before.map((r) => ({ ...r }));
  const open = rows.find((r) => r.outcome === 'running');
  if (HELD.includes(start.state)) assert.ok(open, 'a held job has its attempt open');
  if (c.history === 'start') {
    // An attempt still open belonged to a worker whose lease lapsed.
    if (open) Object.assign(open, { outcome: 'lease_lost', ended_at: args.now, error_code: null, error_message: null });
    rows.push({
      job_id: after.id,
      n: rows.length + 1,
      engine: after.engine,
      worker_id: args.workerId!,
      started_at: args.now,
      ended_at: null,
      outcome: 'running',
      error_code: null,
      error_message: null,
      provider_task_id: taskIdOf(after.engine_state),
    });
  } else if (c.history && open) {
    Object.assign(open, { outcome: c.history, ended_at: args.now, error_code: args.error?.code ?? null, error_message: args.error?.message ?? null });
  }
  if (name === 'saveEngineState' && open) open.provider_task_id = taskIdOf(after.engine_state);
  return rows;
}

async function changesOf(id: string): Promise<[string, number][]> {
  const rows = await h.db.selectFrom('job_changes').select(['job_id', 'version']).where('job_id', '=', id).orderBy('seq').execute();
  return rows.map((r) => [r.job_id, Number(r.version)]);
}

describe('job transitions, each on its own', () => {
  before(async () => {
    dataDir = tempDir();
    h = await openTestDb(dataDir);
    await migrateToLatest(h);
    if (h.dialect === 'postgres') {
      const { rows } = await sql<{ channel: string }>`select ${JOB_CHANNEL_SQL} as channel`.execute(h.db);
      listener = new pg.Client({ connectionString: testEnv(dataDir).DATABASE_URL });
      await listener.connect();
      listener.on('notification', (n) => {
        payloads.push(n.payload ?? '');
        const message = JSON.parse(n.payload ?? 'null');
        if (message?.e === 'j') notified.push(...(message.c as [string, number][]));
      });
      await listener.query(`LISTEN "${rows[0]!.channel}"`);
    }
  });
  after(async () => {
    await listener?.end();
    await h?.close();
  });

  test('every transition of the table has a case here, and each case starts from the statuses its rule allows', () => {
    assert.deepEqual(Object.keys(CASES).sort(), Object.keys(TRANSITIONS).sort(), 'a new transition needs a case in test/transitions.test.ts');
    for (const [name, c] of Object.entries(CASES) as [Transition, Case<Transition>][]) {
      const statuses = new Set(c.allowed.map((s) => STATUS_OF[s]));
      assert.deepEqual([...statuses].sort(), [...TRANSITIONS[name].from].sort(), `${name}: the states tested cover exactly its from-statuses`);
    }
    // Every outcome of the contract is produced: by a transition's history, or by a claim after a lapsed lease.
    const outcomes = new Set([
      'running',
      'lease_lost',
      ...Object.values(CASES)
        .map((c) => c.history)
        .filter((o) => o !== undefined && o !== 'start'),
    ]);
    assert.deepEqual([...outcomes].sort(), [...ATTEMPT_OUTCOMES].sort());
  });

  for (const name of Object.keys(TRANSITIONS) as Transition[]) {
    test(name, async () => {
      const c = CASES[name] as Case<Transition>;
      for (const state of STATES) {
        const start = await jobIn(state);
        const target = c.target?.(start) ?? { jobId: start.id };
        const args = c.args(start) as ArgsOf<Transition> & { now: number; error?: JobError | null; workerId?: string };
        const before = await jobRow(start.id);
        const historyBefore = await attemptRows(start.id);
        const changesBefore = await changesOf(start.id);
        const announcedBefore = announced.length;
        const what = `${name} from ${state}`;

        if (!c.allowed.includes(state)) {
          assert.deepEqual(await run(name, target, args), [], `${what}: refused`);
          assert.deepEqual(await jobRow(start.id), before, `${what}: the row is untouched`);
          assert.deepEqual(await attemptRows(start.id), historyBefore, `${what}: the history is untouched`);
          assert.deepEqual(await changesOf(start.id), changesBefore, `${what}: no change recorded`);
          assert.equal(announced.length, announcedBefore, `${what}: nothing announced`);
          continue;
        }
        for (const wrong of c.wrongTargets?.(start) ?? []) {
          assert.deepEqual(await run(name, wrong, args), [], `${what} with ${JSON.stringify(wrong)}: refused`);
          assert.deepEqual(await jobRow(start.id), before, `${what} with ${JSON.stringify(wrong)}: the row is untouched`);
        }

        const rows = await run(name, target, args);
        assert.equal(rows.length, 1, `${what}: made`);
        const row = await jobRow(start.id);
        assert.deepEqual(rows[0], row, `${what}: returns the row as written`);
        const version = before.version + (c.visible ? 1 : 0);
        const attempts = before.attempts + (c.attemptsDelta ?? 0);
        assert.equal(row.version, version, `${what}: version ${c.visible ? 'bumped' : 'kept'}`);
        assert.equal(row.attempts, attempts, `${what}: attempts`);
        assert.deepEqual(row, { ...before, ...c.sets(before, args), version, attempts }, `${what}: the columns it sets, and no other`);
        assert.deepEqual(await attemptRows(start.id), expectedHistory(c, name, historyBefore, row, args, start), `${what}: the attempt history`);

        const change: [string, number][] = c.visible ? [[start.id, version]] : [];
        assert.deepEqual(announced.slice(announcedBefore), change, `${what}: announced in this process after the commit`);
        if (h.dialect === 'sqlite') assert.deepEqual((await changesOf(start.id)).slice(changesBefore.length), change, `${what}: job_changes`);
        else assert.deepEqual(await changesOf(start.id), [], 'PostgreSQL notifies instead of writing job_changes');
      }
    });
  }

  test('a history through takeovers: the task id is carried, a lapsed lease closes its attempt as lease_lost', async () => {
    const { id, engine } = await insertQueued();
    await claimAs(id, 'w1', T0);
    await run('saveEngineState', { jobId: id, leaseOwner: 'w1' }, { state: submitted(engine, 'task-77'), now: T0 + 100 });
    await run('waitAtProvider', { jobId: id, leaseOwner: 'w1' }, { until: T0 + 1_100, now: T0 + 100 });
    let row = await jobRow(id);
    assert.equal(row.waiting, 'provider_rate_limited');
    await run('waitAtProvider', { jobId: id, leaseOwner: 'w1' }, { until: null, now: T0 + 1_100 });
    row = await jobRow(id);
    assert.deepEqual([row.waiting, row.waiting_until], [null, null], 'the wait is over');
    await run('retryLater', { jobId: id, leaseOwner: 'w1' }, { delayMs: 1_000, error: ERROR, now: T0 + 1_200 });
    await claimAs(id, 'w2', T0 + 2_200);
    // w2's lease lapses; w3 takes the job over, and w2 may no longer touch it.
    const takeover = T0 + 2_200 + LEASE_MS + 1;
    await claimAs(id, 'w3', takeover);
    assert.deepEqual(await run('progress', { jobId: id, leaseOwner: 'w2' }, { progress: 10, now: takeover }), []);
    await run('fail', { jobId: id, leaseOwner: 'w3' }, { error: { code: 'provider_task_lost', message: 'gone' }, now: takeover + 5 });
    row = await jobRow(id);
    assert.equal(row.status, 'failed');
    assert.equal(row.attempts, 3);
    const attempt = { job_id: id, engine, provider_task_id: 'task-77' };
    assert.deepEqual(await attemptRows(id), [
      { ...attempt, n: 1, worker_id: 'w1', started_at: T0, ended_at: T0 + 1_200, outcome: 'retry', error_code: ERROR.code, error_message: ERROR.message },
      { ...attempt, n: 2, worker_id: 'w2', started_at: T0 + 2_200, ended_at: takeover, outcome: 'lease_lost', error_code: null, error_message: null },
      { ...attempt, n: 3, worker_id: 'w3', started_at: takeover, ended_at: takeover + 5, outcome: 'failed', error_code: 'provider_task_lost', error_message: 'gone' },
    ]);
  });

  test('the change is published only once its transaction commits, and announced in this process after that', async () => {
    const { id } = await insertQueued();
    await claimAs(id, 'w1', T0);
    const own = createNotifier();
    const heard: [string, number][] = [];
    own.on('jobChanged', (jobId, version) => heard.push([jobId, version]));
    // A second connection, outside the transaction.
    const other = await openTestDb(dataDir);
    try {
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      let applied!: (row: JobsTable) => void;
      const made = new Promise<JobsTable>((r) => (applied = r));
      const done = transact(h, own, async (step) => {
        const [row] = await applyTransition(step, 'progress', { jobId: id, leaseOwner: 'w1' }, { progress: 60, now: T1 });
        applied(row!);
        await gate; // the transaction stays open until the test has looked
      });
      const row = await made;
      const change: [string, number] = [id, row.version];

      if (h.dialect === 'postgres') {
        // A round trip on the listening connection delivers whatever was already notified.
        await listener!.query('select pg_sleep(0.2)');
        await listener!.query('select 1');
        assert.ok(!notified.some(([j, v]) => j === id && v === row.version), 'no NOTIFY before the commit');
      } else {
        const seen = await other.db.selectFrom('job_changes').select('version').where('job_id', '=', id).where('version', '=', row.version).execute();
        assert.deepEqual(seen, [], 'no job_changes row visible before the commit');
      }
      assert.equal((await other.db.selectFrom('jobs').select('progress').where('id', '=', id).executeTakeFirstOrThrow()).progress, 0, 'the update is not visible yet');
      assert.deepEqual(heard, [], 'nothing announced before the commit');

      release();
      await done;
      assert.deepEqual(heard, [change], 'announced once committed, with the version written');
      if (h.dialect === 'postgres') {
        const payload = await waitFor(() => payloads.find((p) => p.includes(`["${id}",${row.version}]`)), { what: `the NOTIFY of ${id}` });
        assert.deepEqual(JSON.parse(payload), { e: 'j', c: [change] });
      } else {
        const seen = await other.db.selectFrom('job_changes').select(['job_id', 'version']).where('job_id', '=', id).where('version', '=', row.version).execute();
        assert.deepEqual(
          seen.map((r) => [r.job_id, Number(r.version)]),
          [change],
        );
      }
    } finally {
      await other.close();
    }
  });

  test('a transaction that rolls back publishes and announces nothing', async () => {
    const { id } = await insertQueued();
    const claimed = await claimAs(id, 'w1', T0);
    const own = createNotifier();
    const heard: unknown[] = [];
    own.on('jobChanged', (...a) => heard.push(a));
    await assert.rejects(
      transact(h, own, async (step) => {
        await applyTransition(step, 'progress', { jobId: id, leaseOwner: 'w1' }, { progress: 70, now: T1 });
        throw new Error('rolled back');
      }),
      /rolled back/,
    );
    assert.deepEqual(heard, []);
    const row = await jobRow(id);
    assert.equal(row.version, claimed.version);
    assert.equal(row.progress, 0);
    if (h.dialect === 'sqlite') assert.deepEqual(await changesOf(id), [[id, claimed.version]], 'only the claim is recorded');
  });

  test('a transition of many rows records each change; PostgreSQL gets them in NOTIFYs of at most 100', async () => {
    const engine = `eng-many-${newId('job')}`;
    const ids: string[] = [];
    for (let i = 0; i < 150; i++) ids.push((await insertQueued({ engine })).id);
    const payloadsBefore = payloads.length;
    const announcedBefore = announced.length;
    const rows = await run('rerouteWaiting', { engine }, { engine: `${engine}-next`, shift: 0, now: T1 });
    assert.equal(rows.length, 150);
    const changes = rows.map((r): [string, number] => [r.id, r.version]);
    assert.ok(changes.every(([, v]) => v === 1));
    assert.deepEqual(announced.slice(announcedBefore), changes);
    if (h.dialect === 'sqlite') {
      const recorded = await h.db.selectFrom('job_changes').select(['job_id', 'version']).where('job_id', 'in', ids).orderBy('seq').execute();
      assert.deepEqual(
        recorded.map((r) => [r.job_id, Number(r.version)]),
        changes,
      );
    } else {
      await waitFor(() => payloads.length >= payloadsBefore + 2, { what: 'two NOTIFYs' });
      const sent = payloads.slice(payloadsBefore).map((p) => JSON.parse(p));
      assert.deepEqual(
        sent.map((m) => m.c.length),
        [100, 50],
      );
      assert.deepEqual(
        sent.flatMap((m) => m.c),
        changes,
      );
      assert.ok(payloads.slice(payloadsBefore).every((p) => Buffer.byteLength(p) < 8_000));
    }
  });

  test('every visible transition was published once, in order, and nothing else (job_changes / NOTIFY; in-process announcements)', async () => {
    assert.deepEqual(announced, expectedChanges, 'announced in this process');
    if (h.dialect === 'sqlite') {
      const rows = await h.db.selectFrom('job_changes').select(['job_id', 'version']).orderBy('seq').execute();
      // The commit test above made one more (with its own notifier).
      const recorded = rows.map((r): [string, number] => [r.job_id, Number(r.version)]);
      const extra = recorded.filter((c) => !expectedChanges.some((e) => e[0] === c[0] && e[1] === c[1]));
      assert.equal(extra.length, 1, `one change outside the run helper: ${JSON.stringify(extra)}`);
      assert.deepEqual(
        recorded.filter((c) => c !== extra[0]),
        expectedChanges,
      );
    } else {
      // A marker committed last: every NOTIFY committed before it has arrived once it has.
      const { id } = await insertQueued();
      const [marker] = await run('claim', { pick: sql<string>`${id}` }, { workerId: 'w-marker', leaseMs: LEASE_MS, now: T0 });
      await waitFor(() => notified.some(([j, v]) => j === id && v === marker!.version), { what: 'the marker NOTIFY' });
      const ours = new Set(expectedChanges.map(([j, v]) => `${j}:${v}`));
      const extra = notified.filter(([j, v]) => !ours.has(`${j}:${v}`));
      assert.equal(extra.length, 1, `one change outside the run helper: ${JSON.stringify(extra)}`);
      assert.deepEqual(
        notified.filter((c) => c !== extra[0]),
        expectedChanges,
      );
    }
  });
});
