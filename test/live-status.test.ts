// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { EventSource } from 'eventsource';
import { sql } from 'kysely';
import { pruneJobChanges } from '../src/queue/index.ts';
import { transition } from '../src/queue/index.ts';
import { consoleSignIn } from './console-helpers.ts';
import { startFakeEvolink, type FakeEvolink } from './fakes/evolink.ts';
import { KEY_A, KEY_B, killAndWait, openTestDb, pgAdmin, spawnZhinian, startStack, TEST_BACKEND, tempDir, testEnv, waitFor, type Stack } from './helpers.ts';

/**
 * Live status (CONTRACT "Live status"): the server runs in this process without a worker; the
 * worker that moves the jobs is another process on the same database, so every change the
 * streams and `Prefer: wait` see crossed processes (PostgreSQL: NOTIFY; SQLite: the change log).
 * Jobs run on a fake remote provider whose tasks report progress for a while before finishing;
 * a `[fake:never_finish]` prompt keeps one running until it is cancelled.
 */

const KEEP_ALIVE_MS = 300;
const TERMINAL = ['succeeded', 'failed', 'expired', 'cancelled'];

interface Received {
  id: string;
  job: any;
}

describe(`live status (${TEST_BACKEND})`, () => {
  let stack: Stack;
  let evolink: FakeEvolink;
  let worker: ReturnType<typeof spawnZhinian>;

  before(async () => {
    const dataDir = tempDir('zhinian-live-');
    evolink = await startFakeEvolink({ queuedMs: 300, runningMs: 1500 });
    const env = {
      ZHINIAN_ENGINES_IMAGE_GENERATE: 'evolink',
      ZHINIAN_EVOLINK_BASE_URL: evolink.baseUrl,
      ZHINIAN_EVOLINK_API_KEY: 'sk-evo-test',
      ZHINIAN_PROVIDER_POLL_INTERVAL_MS: '100',
    };
    stack = await startStack({ dataDir, worker: false, env, live: { keepAliveMs: KEEP_ALIVE_MS } });
    worker = spawnZhinian('worker', testEnv(dataDir, { ...env, LOG_LEVEL: 'info' }));
    await waitFor(() => worker.output().includes('"msg":"worker started"'), { timeoutMs: 120_000, what: `the worker to start:\n${worker.output().slice(-2000)}` });
  });

  after(async () => {
    await killAndWait(worker);
    await stack?.stop();
    await evolink?.close();
  });

  const create = async (prompt = 'a lighthouse at dusk', headers: Record<string, string> = {}) => {
    const res = await stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt, quality: 'low' }, headers });
    assert.ok(res.status === 201, JSON.stringify(res.body));
    return res;
  };

  /** An EventSource with the client's key; collects `job` events until the stream is closed for good. */
  const listen = (path: string, key = KEY_A) => {
    const events: Received[] = [];
    const errors: unknown[] = [];
    const source = new EventSource(`${stack.url}${path}`, {
      fetch: (input, init) => fetch(input, { ...init, headers: { ...init?.headers, authorization: `Bearer ${key}` } }),
    });
    source.addEventListener('job', (e) => events.push({ id: e.lastEventId, job: JSON.parse(e.data) }));
    source.addEventListener('error', (e) => errors.push(e));
    return { source, events, errors };
  };

  /** Raw bytes of a stream (for comments, which EventSource hides), read until `until` matches. */
  const readRaw = async (path: string, until: (text: string) => boolean, headers: Record<string, string> = {}) => {
    const controller = new AbortController();
    const res = await fetch(`${stack.url}${path}`, { headers: { authorization: `Bearer ${KEY_A}`, ...headers }, signal: controller.signal });
    let text = '';
    if (res.body) {
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      try {
        for (;;) {
          if (until(text)) break;
          const { value, done } = await reader.read();
          if (done) break;
          text += decoder.decode(value, { stream: true });
        }
      } finally {
        controller.abort();
      }
    }
    return { res, text };
  };

  test('the first event at once with an id; progress and status from a worker in another process; the stream ends after the terminal event', async () => {
    const { body } = await create();
    const { source, events } = listen(`/api/v1/jobs/${body.job.id}/events`);
    try {
      // After the terminal event the server ends the stream; the reconnect gets 204 and EventSource stops for good.
      await waitFor(() => source.readyState === EventSource.CLOSED, { timeoutMs: 60_000, what: 'the stream to end for good' });
    } finally {
      source.close();
    }
    assert.ok(events.length >= 3, `events: ${JSON.stringify(events.map((e) => [e.id, e.job.status, e.job.progress]))}`);
    assert.equal(events[0]!.job.id, body.job.id);
    assert.ok(['queued', 'running'].includes(events[0]!.job.status));
    const ids = events.map((e) => Number(e.id));
    assert.ok(
      ids.every((id, i) => Number.isInteger(id) && (i === 0 || id > ids[i - 1]!)),
      `ids increase: ${ids}`,
    );
    assert.ok(
      events.some((e) => e.job.status === 'running' && e.job.progress > 0 && e.job.progress < 100),
      'progress while running',
    );
    assert.equal(events.at(-1)!.job.status, 'succeeded');
    assert.equal(events.filter((e) => TERMINAL.includes(e.job.status)).length, 1, 'one terminal event, the last');
    assert.ok('statusDetail' in events[0]!.job);
  });

  test('Last-Event-ID resumes: no event seen twice, the terminal one not lost; a terminal job already seen answers 204', async () => {
    const { body } = await create();
    const id = body.job.id;
    // The first event only, then the client goes away.
    const first = await readRaw(`/api/v1/jobs/${id}/events`, (text) => /\nid: \d+\n/.test(text) || text.startsWith('id:'));
    assert.equal(first.res.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    assert.equal(first.res.headers.get('cache-control'), 'no-cache');
    assert.equal(first.res.headers.get('x-accel-buffering'), 'no');
    const firstId = Number(/id: (\d+)/.exec(first.text)![1]);
    await waitFor(
      async () => {
        const { body: now } = await stack.api(`/api/v1/jobs/${id}`);
        return now.job.status === 'running' && now.job.progress > 10;
      },
      { timeoutMs: 60_000, what: 'the job to make progress' },
    );
    const { source, events } = listen(`/api/v1/jobs/${id}/events?lastEventId=${firstId}`);
    try {
      await waitFor(() => source.readyState === EventSource.CLOSED, { timeoutMs: 60_000, what: 'the resumed stream to end' });
    } finally {
      source.close();
    }
    const ids = events.map((e) => Number(e.id));
    assert.ok(ids.length >= 1 && ids[0]! > firstId, `resumed after ${firstId}: ${ids}`);
    assert.equal(new Set(ids).size, ids.length, 'no id twice');
    assert.equal(events.at(-1)!.job.status, 'succeeded');
    const lastId = ids.at(-1)!;
    const done = await fetch(`${stack.url}/api/v1/jobs/${id}/events`, { headers: { authorization: `Bearer ${KEY_A}`, 'last-event-id': String(lastId) } });
    assert.equal(done.status, 204);
    // Without an id, a terminal job still gets its state once, then the end.
    const again = await readRaw(`/api/v1/jobs/${id}/events`, () => false);
    assert.equal((again.text.match(/event: job/g) ?? []).length, 1);
    assert.match(again.text, /"status":"succeeded"/);
  });

  test("an unknown job or another client's is 404 before any stream starts", async () => {
    const { body } = await create();
    for (const [path, key] of [
      [`/api/v1/jobs/${body.job.id}/events`, KEY_B],
      ['/api/v1/jobs/job_00000000000000000000000000/events', KEY_A],
      ['/api/v1/jobs/nonsense/events', KEY_A],
    ] as const) {
      const res = await stack.api(path, { key });
      assert.equal(res.status, 404, path);
      assert.equal(res.body.code, 'not_found');
      assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    }
    assert.equal((await stack.api(`/api/v1/jobs/${body.job.id}/events?since=1`)).status, 400, 'unknown query parameter');
  });

  test('a keep-alive comment while nothing changes; a cancel ends the stream with its event', async () => {
    const { body } = await create('[fake:never_finish] a slow one');
    const id = body.job.id;
    const { text } = await readRaw(`/api/v1/jobs/${id}/events`, (t) => t.includes(': keep-alive\n\n'));
    assert.match(text, /event: job\n/);
    assert.match(text, /: keep-alive\n\n/);
    const { source, events } = listen(`/api/v1/jobs/${id}/events`);
    try {
      await waitFor(() => events.length > 0, { what: 'the first event' });
      assert.equal((await stack.api(`/api/v1/jobs/${id}/cancel`, { method: 'POST' })).status, 200);
      await waitFor(() => source.readyState === EventSource.CLOSED, { timeoutMs: 30_000, what: 'the stream to end after the cancel' });
    } finally {
      source.close();
    }
    assert.equal(events.at(-1)!.job.status, 'cancelled');
  });

  test("Prefer: wait on GET is released by another process's transition; on POST too", async () => {
    const { body } = await create();
    const started = Date.now();
    const got = await stack.api(`/api/v1/jobs/${body.job.id}`, { headers: { prefer: 'wait=50' } });
    assert.equal(got.status, 200);
    assert.equal(got.headers.get('preference-applied'), 'wait=50');
    assert.equal(got.body.job.status, 'succeeded', 'answered when the job ended');
    assert.ok(Date.now() - started < 45_000, 'well before the 50 s');

    const posted = await create('a second lighthouse', { prefer: 'respond-async, wait=50' });
    assert.equal(posted.headers.get('preference-applied'), 'wait=50');
    assert.equal(posted.body.job.status, 'succeeded');
    assert.equal(posted.body.reused, false);

    // A job that does not end: the answer comes after N seconds, as it is then.
    const slow = await create('[fake:never_finish] waits');
    const waited = await stack.api(`/api/v1/jobs/${slow.body.job.id}`, { headers: { prefer: 'wait=1' } });
    assert.equal(waited.headers.get('preference-applied'), 'wait=1');
    assert.ok(['queued', 'running'].includes(waited.body.job.status));
    await stack.api(`/api/v1/jobs/${slow.body.job.id}/cancel`, { method: 'POST' });
  });

  test('Prefer with another or an invalid wait is ignored (no Preference-Applied)', async () => {
    for (const prefer of ['wait=0', 'wait=61', 'wait=abc', 'wait=-1', 'handling=lenient', 'wait']) {
      const res = await create('[fake:never_finish] ignored', { prefer });
      assert.equal(res.headers.get('preference-applied'), null, prefer);
      assert.equal(res.body.job.status, 'queued', `${prefer}: answered at once`);
      const got = await stack.api(`/api/v1/jobs/${res.body.job.id}`, { headers: { prefer } });
      assert.equal(got.status, 200);
      assert.equal(got.headers.get('preference-applied'), null, prefer);
      await stack.api(`/api/v1/jobs/${res.body.job.id}/cancel`, { method: 'POST' });
    }
  });

  test('100 streams opened and closed leave no listener behind; the 101st open one is 429', async () => {
    const { body } = await create('[fake:never_finish] watched by many');
    const id = body.job.id;
    const live = stack.live!;
    const before = live.feed.listenerCount();
    const controllers = Array.from({ length: 100 }, () => new AbortController());
    const responses = await Promise.all(
      controllers.map((c) => fetch(`${stack.url}/api/v1/jobs/${id}/events`, { headers: { authorization: `Bearer ${KEY_A}` }, signal: c.signal })),
    );
    assert.ok(responses.every((r) => r.status === 200));
    await waitFor(() => live.feed.listenerCount() === before + 100, { what: '100 listeners' });
    const over = await stack.api(`/api/v1/jobs/${id}/events`);
    assert.equal(over.status, 429);
    assert.equal(over.body.code, 'rate_limited');
    assert.ok(Number(over.headers.get('retry-after')) > 0);
    // Another client has its own budget.
    const { body: theirs } = await stack.api('/api/v1/jobs', { method: 'POST', key: KEY_B, json: { capability: 'image.generate', prompt: 'theirs', quality: 'low' } });
    const controller = new AbortController();
    const otherStream = await fetch(`${stack.url}/api/v1/jobs/${theirs.job.id}/events`, { headers: { authorization: `Bearer ${KEY_B}` }, signal: controller.signal });
    assert.equal(otherStream.status, 200);
    controller.abort();
    for (const c of controllers) c.abort();
    await waitFor(() => live.feed.listenerCount() === before && live.open.size === 0, { what: 'every listener and count gone' });
    const again = await readRaw(`/api/v1/jobs/${id}/events`, (t) => t.includes('event: job'));
    assert.equal(again.res.status, 200);
    await stack.api(`/api/v1/jobs/${id}/cancel`, { method: 'POST' });
    await waitFor(() => live.feed.listenerCount() === before, { what: 'the last listener gone' });
  });

  test('a server shutting down ends its open streams (clients resume elsewhere)', async () => {
    const other = await startStack({
      dataDir: stack.dataDir,
      worker: false,
      env: { ZHINIAN_ENGINES_IMAGE_GENERATE: 'evolink', ZHINIAN_EVOLINK_BASE_URL: evolink.baseUrl, ZHINIAN_EVOLINK_API_KEY: 'sk-evo-test' },
    });
    let stopped = false;
    try {
      const { body } = await other.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: '[fake:never_finish] during a shutdown', quality: 'low' } });
      const res = await fetch(`${other.url}/api/v1/jobs/${body.job.id}/events`, { headers: { authorization: `Bearer ${KEY_A}` } });
      assert.equal(res.status, 200);
      const text = res.text();
      await waitFor(() => other.live!.feed.listenerCount() > 0, { what: 'the stream to watch' });
      await other.stop();
      stopped = true;
      assert.match(await text, /event: job\n/, 'the stream ended with what it had sent');
      await stack.api(`/api/v1/jobs/${body.job.id}/cancel`, { method: 'POST' });
    } finally {
      if (!stopped) await other.stop();
    }
  });

  test('a change made while the LISTEN connection was down reaches the stream once it is back (PostgreSQL); old change-log rows are pruned (SQLite)', async () => {
    const handle = await openTestDb(stack.dataDir);
    try {
      if (TEST_BACKEND === 'sqlite') {
        const now = Date.now();
        await handle.db
          .insertInto('job_changes')
          .values([
            { job_id: 'job_old', version: 1, at: now - 120_000 },
            { job_id: 'job_new', version: 1, at: now },
          ])
          .execute();
        await pruneJobChanges(handle, now);
        const left = await handle.db.selectFrom('job_changes').select('job_id').where('job_id', 'in', ['job_old', 'job_new']).execute();
        assert.deepEqual(
          left.map((r) => r.job_id),
          ['job_new'],
        );
        return;
      }
      const { body } = await create('[fake:never_finish] across an outage');
      const id = body.job.id;
      const { source, events } = listen(`/api/v1/jobs/${id}/events`);
      try {
        const running = await waitFor(() => events.find((e) => e.job.status === 'running' && e.job.progress >= 10), { timeoutMs: 30_000, what: 'the job running' });
        const row = await handle.db.selectFrom('jobs').select(['lease_owner', 'version']).where('id', '=', id).executeTakeFirstOrThrow();
        await waitFor(() => events.at(-1)!.id === String(row.version), { what: 'the stream caught up' });
        const schema = (await sql<{ s: string }>`select current_schema() as s`.execute(handle.db)).rows[0]!.s;
        // Every LISTEN connection of this schema (the server's, the worker's) is cut; the change
        // is made at once, so its NOTIFY reaches no server; only the re-read on restore shows it.
        pgAdmin(`select pg_terminate_backend(pid) from pg_stat_activity where query like 'LISTEN %' and query like '%${schema}%'`);
        await transition(handle, null, 'progress', { jobId: id, leaseOwner: row.lease_owner! }, { progress: 97, now: Date.now() });
        await waitFor(() => events.some((e) => e.job.progress === 97), { timeoutMs: 30_000, what: 'the change made during the outage' });
        assert.ok(Number(events.at(-1)!.id) > Number(running.id));
      } finally {
        source.close();
        await stack.api(`/api/v1/jobs/${id}/cancel`, { method: 'POST' });
      }
    } finally {
      await handle.close();
    }
  });

  test('the console streams a job, and the running rows of a list, to a signed-in user only', async () => {
    const { body } = await create('[fake:never_finish] seen in the console');
    const id = body.job.id;
    const call = await consoleSignIn(stack);
    const denied = await fetch(`${stack.url}/admin/api/jobs/${id}/events`);
    assert.equal(denied.status, 401);
    const read = (path: string, until: (t: string) => boolean) => readRaw(path, until, { cookie: call.cookie });
    const one = await read(`/admin/api/jobs/${id}/events`, (t) => t.includes('event: job'));
    assert.equal(one.res.status, 200);
    assert.equal(one.res.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    assert.match(one.text, new RegExp(`"id":"${id}"`));
    const { body: second } = await create('[fake:never_finish] a second row');
    const many = await read(`/admin/api/jobs/events?ids=${id},${second.job.id}`, (t) => (t.match(/event: job/g) ?? []).length >= 2);
    assert.match(many.text, new RegExp(`"id":"${id}"`));
    assert.match(many.text, new RegExp(`"id":"${second.job.id}"`));
    const none = await fetch(`${stack.url}/admin/api/jobs/events?ids=job_nope1,job_nope2`, { headers: { cookie: call.cookie } });
    assert.equal(none.status, 204, 'nothing to follow: an EventSource stops');
    // A change reaches the console's stream too: the cancel is its last event.
    const { source, events } = (() => {
      const events: any[] = [];
      const source = new EventSource(`${stack.url}/admin/api/jobs/${id}/events`, {
        fetch: (input, init) => fetch(input, { ...init, headers: { ...init?.headers, cookie: call.cookie } }),
      });
      source.addEventListener('job', (e) => events.push(JSON.parse(e.data)));
      return { source, events };
    })();
    try {
      await waitFor(() => events.length > 0, { what: 'the console stream' });
      await stack.api(`/api/v1/jobs/${id}/cancel`, { method: 'POST' });
      await stack.api(`/api/v1/jobs/${second.job.id}/cancel`, { method: 'POST' });
      await waitFor(() => source.readyState === EventSource.CLOSED, { timeoutMs: 30_000, what: 'the console stream to end' });
    } finally {
      source.close();
    }
    assert.equal(events.at(-1).status, 'cancelled');
  });
});
