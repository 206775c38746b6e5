// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FakeResponse, FakeServer, RecordedRequest } from './fakes/common.ts';
import { startFakeEvolink, type FakeEvolink } from './fakes/evolink.ts';
import { FAKE_VOLC_ACCESS_KEY_ID, FAKE_VOLC_SECRET_ACCESS_KEY, startFakeJimeng, type FakeJimeng } from './fakes/jimeng.ts';
import { startFakeSeedance, type FakeSeedance } from './fakes/seedance.ts';
import { openTestDb, startStack, waitForJob, type Stack } from './helpers.ts';

/**
 * Hostile provider answers, at submit, poll and result time, from each fake provider: NUL
 * bytes, lone surrogates, a megabyte of message, bytes that are not UTF-8, values of the wrong
 * JSON type, missing fields, unusable task ids and result URLs. Whatever the answer, the job
 * reaches a clear terminal state, with the provider's error kept in storable form (on
 * PostgreSQL a NUL in a text column fails the whole write), and is not submitted twice.
 */

type Provider = 'jimeng' | 'seedance' | 'evolink';
type Stage = 'submit-error' | 'submit-answer' | 'poll-error' | 'result';
type Mutation = 'nul' | 'huge' | 'invalid_utf8' | 'wrong_type' | 'missing' | 'id_nul' | 'id_number' | 'id_huge' | 'url_nul' | 'url_number' | 'url_missing';

const HOSTILE = 'HOSTILE \u0000nul \ud800lone \udc00 🙂 end';
// Not UTF-8, but still valid JSON around it (a body that is not JSON at all is a different case: a poll glitch, retried).
const BAD_BYTES = Buffer.from([0xff, 0xfe, 0xc3, 0x28]);

interface Case {
  n: number;
  provider: Provider;
  stage: Stage;
  mutation: Mutation;
  taskId?: string;
  jobId?: string;
}

const CASES: Omit<Case, 'n'>[] = [];
for (const provider of ['jimeng', 'seedance', 'evolink'] as const) {
  for (const mutation of ['nul', 'huge', 'invalid_utf8', 'wrong_type', 'missing'] as const) {
    CASES.push({ provider, stage: 'submit-error', mutation }, { provider, stage: 'poll-error', mutation });
  }
  for (const mutation of ['id_nul', 'id_number', 'id_huge', 'missing'] as const) CASES.push({ provider, stage: 'submit-answer', mutation });
  for (const mutation of ['url_nul', 'url_number', 'url_missing'] as const) CASES.push({ provider, stage: 'result', mutation });
}

/** Applies `change` to every value under a key in `keys`, anywhere in the JSON. */
function mapKeys(value: unknown, keys: string[], change: (v: unknown) => unknown): unknown {
  if (Array.isArray(value)) return value.map((v) => mapKeys(v, keys, change));
  if (!value || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (keys.includes(k)) {
      const changed = change(v);
      if (changed !== undefined) out[k] = changed;
    } else out[k] = mapKeys(v, keys, change);
  }
  return out;
}

/** Replaces every result URL (the fakes serve them under /files/) in the JSON. */
function mapUrls(value: unknown, change: (url: string) => unknown): unknown {
  if (typeof value === 'string') return value.includes('/files/') ? change(value) : value;
  if (Array.isArray(value)) return value.map((v) => mapUrls(v, change)).filter((v) => v !== undefined);
  if (!value || typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mapUrls(v, change)]));
}

const MESSAGE_KEYS = ['message', 'Message'];
const CODE_KEYS = ['code', 'Code'];

/** The hostile version of an answer the fake was about to send. */
function mutate(c: Case, answer: FakeResponse): FakeResponse {
  const json = answer.json ?? JSON.parse(String(answer.body ?? 'null'));
  const send = (body: unknown): FakeResponse => ({ status: answer.status, json: body, headers: answer.headers });
  switch (c.mutation) {
    case 'nul':
      return send(mapKeys(json, MESSAGE_KEYS, () => HOSTILE));
    case 'huge':
      return send(mapKeys(json, MESSAGE_KEYS, () => `HOSTILE ${'x'.repeat(1024 * 1024)}`));
    case 'invalid_utf8': {
      const text = JSON.stringify(mapKeys(json, MESSAGE_KEYS, () => 'HOSTILE @@BAD@@'));
      const [head, tail] = text.split('@@BAD@@');
      return { status: answer.status, body: Buffer.concat([Buffer.from(head!), BAD_BYTES, Buffer.from(tail!)]), headers: { 'content-type': 'application/json' } };
    }
    case 'wrong_type':
      return send(
        mapKeys(
          mapKeys(json, MESSAGE_KEYS, () => ({ HOSTILE: [1, '\u0000'] })),
          CODE_KEYS,
          () => ['x'],
        ),
      );
    case 'missing':
      return c.stage === 'submit-answer' ? send(mapKeys(json, ['id', 'task_id'], () => undefined)) : send(mapKeys(json, [...MESSAGE_KEYS, ...CODE_KEYS], () => undefined));
    case 'id_nul':
      return send(mapKeys(json, ['id', 'task_id'], (v) => `${v}\u0000HOSTILE`));
    case 'id_number':
      return send(mapKeys(json, ['id', 'task_id'], () => ({ HOSTILE: 1 })));
    case 'id_huge':
      return send(mapKeys(json, ['id', 'task_id'], (v) => `${v}${'9'.repeat(100_000)}`));
    case 'url_nul':
      return send(mapUrls(json, (url) => url.replace('/files/', '/fi\u0000les/')));
    case 'url_number':
      return send(mapUrls(json, () => 12345));
    case 'url_missing':
      return send(mapUrls(json, () => undefined));
  }
}

const PROMPT_CASE = /case-(\d+)-/;

/** The prompt (submit) or the task id (poll) a request is about. */
function aboutOf(provider: Provider, req: RecordedRequest): { prompt?: string; taskId?: string } {
  if (provider === 'jimeng') {
    if (req.query.Action === 'CVSync2AsyncSubmitTask') return { prompt: req.body?.prompt };
    return { taskId: req.body?.task_id };
  }
  if (req.method === 'POST') {
    const prompt = provider === 'seedance' ? req.body?.content?.find((c: any) => c?.type === 'text')?.text : req.body?.prompt;
    return { prompt };
  }
  return { taskId: decodeURIComponent(req.path.split('/').pop()!) };
}

function taskIdOf(provider: Provider, answer: FakeResponse): string | undefined {
  const json = answer.json as any;
  return provider === 'jimeng' ? json?.data?.task_id : json?.id;
}

/** Routes every request of a fake to its case and applies the case's mutation at its stage. */
function interceptFor(provider: Provider, cases: Case[]) {
  return (req: RecordedRequest, answer: FakeResponse): FakeResponse => {
    const about = aboutOf(provider, req);
    if (about.prompt !== undefined) {
      const c = cases[Number(PROMPT_CASE.exec(about.prompt)?.[1])];
      if (!c) return answer;
      c.taskId = taskIdOf(provider, answer) ?? c.taskId;
      return c.stage === 'submit-error' || c.stage === 'submit-answer' ? mutate(c, answer) : answer;
    }
    const c = cases.find((x) => x.provider === provider && x.taskId !== undefined && x.taskId === about.taskId);
    if (!c) return answer;
    if (c.stage === 'poll-error' && answer.status >= 400) return mutate(c, answer);
    if (c.stage === 'poll-error' && JSON.stringify(answer.json ?? '').includes('"failed"')) return mutate(c, answer);
    if (c.stage === 'result' && JSON.stringify(answer.json ?? '').includes('/files/')) return mutate(c, answer);
    return answer;
  };
}

function prompt(c: Case): string {
  const scenario = c.stage === 'submit-error' ? '[fake:moderation_submit] ' : c.stage === 'poll-error' ? '[fake:moderation_result] ' : '';
  return `${scenario}case-${c.n}-${c.provider}-${c.stage}-${c.mutation}`;
}

function jobBody(c: Case) {
  const p = prompt(c);
  if (c.provider === 'seedance') return { capability: 'video.generate', prompt: p, settings: { duration: 4, resolution: '480p' }, engine: 'seedance' };
  return { capability: 'image.generate', prompt: p, engine: c.provider, ...(c.provider === 'jimeng' ? { force_single: true } : {}) };
}

/** Text a database stores as it is: no NUL, no lone surrogate, bounded. */
function assertStorable(text: unknown, what: string) {
  assert.equal(typeof text, 'string', what);
  const s = text as string;
  assert.ok(!s.includes('\u0000'), `${what}: NUL in ${JSON.stringify(s.slice(0, 200))}`);
  assert.ok((s as string & { isWellFormed(): boolean }).isWellFormed(), `${what}: lone surrogate in ${JSON.stringify(s.slice(0, 200))}`);
  assert.ok(s.length <= 2_000, `${what}: ${s.length} characters`);
}

describe('hostile provider answers end every job clearly', () => {
  let stack: Stack;
  let fakes: { jimeng: FakeJimeng; seedance: FakeSeedance; evolink: FakeEvolink };
  const cases: Case[] = CASES.map((c, n) => ({ ...c, n }));

  before(async () => {
    fakes = { jimeng: await startFakeJimeng(), seedance: await startFakeSeedance(), evolink: await startFakeEvolink() };
    for (const provider of ['jimeng', 'seedance', 'evolink'] as const) {
      (fakes[provider].server as FakeServer).intercept = interceptFor(provider, cases);
    }
    stack = await startStack({
      env: {
        ZHINIAN_PROVIDER_POLL_INTERVAL_MS: '20',
        ZHINIAN_JIMENG_BASE_URL: fakes.jimeng.baseUrl,
        ZHINIAN_VOLC_ACCESS_KEY_ID: FAKE_VOLC_ACCESS_KEY_ID,
        ZHINIAN_VOLC_SECRET_ACCESS_KEY: FAKE_VOLC_SECRET_ACCESS_KEY,
        ZHINIAN_ARK_BASE_URL: fakes.seedance.baseUrl,
        ZHINIAN_ARK_API_KEY: 'test-ark-key',
        ZHINIAN_EVOLINK_BASE_URL: fakes.evolink.baseUrl,
        ZHINIAN_EVOLINK_API_KEY: 'sk-evo-test',
        ZHINIAN_POLL_INTERVAL_MS: '200',
        ZHINIAN_JIMENG_MAX_CONCURRENCY: '50',
        ZHINIAN_ARK_MAX_CONCURRENCY: '50',
        ZHINIAN_EVOLINK_MAX_CONCURRENCY: '50',
        ZHINIAN_WORKER_CONCURRENCY: '8',
        // A job that went wrong in a way this suite misses would be retried: one lease is enough to see it.
        ZHINIAN_JOB_LEASE_SECONDS: '5',
      },
    });
  });
  after(async () => {
    await stack?.stop().catch(() => {});
    await Promise.all(Object.values(fakes ?? {}).map((f) => f.close().catch(() => {})));
  });

  test(`${CASES.length} hostile answers: each job fails with a storable error that keeps the provider's words`, async () => {
    for (const c of cases) {
      const res = await stack.api('/api/v1/jobs', { method: 'POST', json: jobBody(c) });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      c.jobId = res.body.job.id;
    }
    const problems: string[] = [];
    const handle = await openTestDb(stack.dataDir);
    // Many provider errors in a row open an engine's circuit for 30 s (by design): end each
    // cool-down at once (backdated), so the suite does not wait for it.
    const coolDown = setInterval(() => {
      handle.db
        .updateTable('engine_circuits')
        .set({ open_until: 0 })
        .where('open_until', '>', 0)
        .execute()
        .catch(() => {});
    }, 100);
    try {
      for (const c of cases) {
        const label = `#${c.n} ${c.provider} ${c.stage} ${c.mutation}`;
        let job: any;
        try {
          job = await waitForJob(stack, c.jobId!, ['succeeded', 'failed', 'expired', 'cancelled'], 60_000);
        } catch (error) {
          problems.push(`${label}: ${(error as Error).message}`);
          continue;
        }
        try {
          assert.equal(job.status, 'failed', `${label}: ${job.status}`);
          assertStorable(job.error?.message, `${label} error.message`);
          assert.match(job.error.code, /^[a-z_]+$/, label);
          const row = await handle.db.selectFrom('jobs').select(['attempts', 'error_message', 'engine_state', 'status']).where('id', '=', c.jobId!).executeTakeFirstOrThrow();
          assert.equal(row.status, 'failed', label);
          assert.equal(row.attempts, 1, `${label}: ${row.attempts} attempts`);
          // The provider's own words are kept, made storable.
          if (c.mutation === 'nul') assert.match(job.error.message, /HOSTILE \uFFFDnul \uFFFDlone \uFFFD 🙂 end/, label);
          if (c.mutation === 'huge' || c.mutation === 'invalid_utf8') assert.match(job.error.message, /HOSTILE/, label);
          if (c.mutation === 'invalid_utf8') assert.match(job.error.message, /\uFFFD/, label);
          if (c.mutation === 'huge') assert.ok(job.error.message.endsWith('…'), label);
          const submits = fakes[c.provider].requests.filter((r) => aboutOf(c.provider, r).prompt?.includes(`case-${c.n}-`)).length;
          assert.equal(submits, 1, `${label}: submitted ${submits} times`);
        } catch (error) {
          problems.push((error as Error).message.split('\n')[0]!);
        }
      }
    } finally {
      clearInterval(coolDown);
      await handle.close();
    }
    assert.deepEqual(problems, []);
  });
});
