// @backends sqlite,postgres
// The console cannot stall the API (console/queries/reader.ts): a console query runs off the
// main thread on SQLite (a reader process) and with a statement timeout on PostgreSQL, so
// /api/v1 answers while one is in flight, and a query past its time limit is stopped and
// answered 503 `query_timeout`. No timing is asserted: only what finished before what.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { closeConsoleReader, QueryTimeout, readConsole, setConsoleReaderDefaults } from '../src/console/queries/reader.ts';
import type { DbHandle } from '../src/db/index.ts';
import { consoleSignIn } from './console-helpers.ts';
import { openTestDb, startStack, TEST_BACKEND, waitFor, type Stack } from './helpers.ts';

const MARKER = 'zhinian_reader_test_marker';

/** A query that never ends by itself. */
const endless =
  TEST_BACKEND === 'postgres'
    ? sql`select pg_sleep(600) as ${sql.raw(MARKER)}`
    : sql`with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) as ${sql.raw(MARKER)} from c`;

/** Pids of the SQLite reader processes open on `file` (their command line ends with it). */
function readerPids(file: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter(Boolean);
      if (args.includes('-e') && args[args.length - 1] === file) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** PostgreSQL backends running the endless query. */
async function pgRunning(handle: DbHandle): Promise<number[]> {
  const { rows } = await sql<{ pid: number }>`select pid from pg_stat_activity where state = 'active' and query like ${`%${MARKER}%`} and pid <> pg_backend_pid()`.execute(
    handle.db,
  );
  return rows.map((r) => r.pid);
}

/** A promise's fate, readable at any time. */
function track<T>(promise: Promise<T>) {
  const state: { settled: boolean; error: unknown; value: T | undefined } = { settled: false, error: undefined, value: undefined };
  const done = promise.then(
    (value) => {
      state.settled = true;
      state.value = value;
    },
    (error) => {
      state.settled = true;
      state.error = error;
    },
  );
  return Object.assign(state, { done });
}

describe('console reader: time limit, off the main thread', () => {
  let stack: Stack;
  let jobId: string;
  let dbFile: string;

  before(async () => {
    stack = await startStack({ worker: false });
    const created = await stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'reader', width: 64, height: 64 } });
    assert.equal(created.status, 201);
    jobId = created.body.job.id;
    dbFile = path.join(stack.dataDir, 'zhinian.db');
  });
  after(async () => {
    setConsoleReaderDefaults({ timeLimitMs: 10_000 });
    await stack?.stop();
  });

  test('/api/v1 answers, reads and writes, while a console query is in flight', async () => {
    setConsoleReaderDefaults({ timeLimitMs: 300_000 });
    const handle = await openTestDb(stack.dataDir);
    try {
      const slow = track(readConsole(handle, (db) => endless.execute(db)));
      if (TEST_BACKEND === 'postgres') await waitFor(async () => (await pgRunning(handle)).length > 0, { what: 'the endless query running' });
      else await waitFor(() => readerPids(dbFile).length > 0, { what: 'a reader process' });

      const got = await stack.api(`/api/v1/jobs/${jobId}`);
      assert.equal(got.status, 200);
      const made = await stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'meanwhile', width: 64, height: 64 } });
      assert.equal(made.status, 201);
      assert.equal(slow.settled, false, 'the console query is still running');

      // Stopped from outside (not by its limit, which is far away): it fails, nothing hangs.
      if (TEST_BACKEND === 'postgres') {
        for (const pid of await pgRunning(handle)) await sql`select pg_cancel_backend(${pid})`.execute(handle.db);
      } else await closeConsoleReader(handle);
      await slow.done;
      assert.ok(slow.error instanceof Error);
    } finally {
      await closeConsoleReader(handle);
      await handle.close();
    }
  });

  test('a console query past its time limit is stopped and refused with query_timeout; the next one runs', async () => {
    setConsoleReaderDefaults({ timeLimitMs: 5000 });
    const handle = await openTestDb(stack.dataDir);
    try {
      const slow = track(readConsole(handle, (db) => endless.execute(db)));
      await slow.done;
      assert.ok(slow.error instanceof QueryTimeout, String(slow.error));
      assert.equal((slow.error as QueryTimeout).code, 'query_timeout');
      // Really stopped: no process or backend is still running it.
      if (TEST_BACKEND === 'postgres') await waitFor(async () => (await pgRunning(handle)).length === 0, { what: 'the endless query gone' });
      else await waitFor(() => readerPids(dbFile).length === 0, { what: 'the reader process killed' });
      const { rows } = await readConsole(handle, (db) => sql<{ n: number }>`select count(*) as n from jobs`.execute(db));
      assert.equal(Number(rows[0].n), 2);
      // The reader reads only.
      await assert.rejects(readConsole(handle, (db) => sql`delete from jobs`.execute(db)));
      assert.equal((await stack.api(`/api/v1/jobs/${jobId}`)).status, 200);
    } finally {
      await closeConsoleReader(handle);
      await handle.close();
    }
  });

  test('a console page whose query is stuck answers 503 query_timeout; /api/v1 answers meanwhile', async () => {
    setConsoleReaderDefaults({ timeLimitMs: 5000 });
    const admin = await consoleSignIn(stack);
    const usage = () => admin('GET', '/admin/api/usage');
    assert.equal((await usage()).status, 200);
    const handle = await openTestDb(stack.dataDir);
    try {
      // The console's query waits: on PostgreSQL for a lock on the roll-up, on SQLite in a
      // reader process that is stopped (SIGSTOP), as a query that never returns would be.
      if (TEST_BACKEND === 'postgres') {
        await handle.db.transaction().execute(async (tx) => {
          await sql`lock table usage_daily in access exclusive mode`.execute(tx);
          const answer = track(usage());
          await waitFor(
            async () => (await sql<{ n: number }>`select count(*) as n from pg_locks where not granted and relation = 'usage_daily'::regclass`.execute(handle.db)).rows[0].n > 0,
            {
              what: 'the console query waiting for the lock',
            },
          );
          assert.equal((await stack.api(`/api/v1/jobs/${jobId}`)).status, 200);
          assert.equal(answer.settled, false, 'the console request is still waiting');
          const res = await usageAfter(answer);
          assert.equal(res.status, 503);
          assert.equal(res.body.code, 'query_timeout');
          assert.match(res.body.error, /took longer than 5 s/);
        });
      } else {
        const pids = readerPids(dbFile);
        assert.ok(pids.length > 0, 'the console has a reader process');
        for (const pid of pids) process.kill(pid, 'SIGSTOP');
        const answer = track(usage());
        assert.equal((await stack.api(`/api/v1/jobs/${jobId}`)).status, 200);
        assert.equal(answer.settled, false, 'the console request is still waiting');
        const res = await usageAfter(answer);
        assert.equal(res.status, 503);
        assert.equal(res.body.code, 'query_timeout');
        await waitFor(() => !readerPids(dbFile).some((pid) => pids.includes(pid)), { what: 'the stuck reader killed' });
        // Any other (idle) reader of the console was stopped too: let it go on.
        for (const pid of readerPids(dbFile)) process.kill(pid, 'SIGCONT');
      }
      assert.equal((await usage()).status, 200, 'the next console request is answered');
    } finally {
      await handle.close();
    }
  });
});

/** The answer a tracked console request got. */
async function usageAfter<T>(answer: ReturnType<typeof track<T>>): Promise<T> {
  await answer.done;
  assert.equal(answer.error, undefined);
  return answer.value as T;
}
