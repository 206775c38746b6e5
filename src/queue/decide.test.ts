import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ERR, type JobErrorCode } from '../lib/error-codes.ts';
import type { ClaimedJob } from './claimed-job.ts';
import { JOB_RETRY_DELAYS_MS } from '../lib/retry-ladders.ts';
import { checkClaimed, decideAfterRun, type RunOutcome } from './decide.ts';

const NOW = 1_800_000_000_000;
const job = (fields: Partial<ClaimedJob> = {}): ClaimedJob => ({
  id: 'job_x',
  clientId: 'client-a',
  capability: 'image.generate',
  prompt: 'p',
  params: {},
  inputAssetIds: [],
  engine: 'evolink',
  enginePinned: false,
  engineState: null,
  attempts: 1,
  progress: 0,
  createdAt: NOW - 5_000,
  startedAt: NOW - 1_000,
  leaseOwner: 'wrk_1',
  ...fields,
});
const failed = (code: JobErrorCode, opts: { retryable?: boolean; expired?: boolean; remote?: boolean; submitted?: boolean } = {}): RunOutcome => ({
  kind: 'failed',
  error: { code, message: `${code} happened`, retryable: opts.retryable ?? false, expired: opts.expired ?? false },
  remote: opts.remote ?? true,
  submitted: opts.submitted ?? false,
});
const ctx = { now: NOW, maxAttempts: 3, nextEngine: 'jimeng' as string | null };

describe('decideAfterRun', () => {
  test('shutdown hands the job back, not counting the attempt', () => {
    assert.deepEqual(decideAfterRun(job(), { kind: 'aborted', reason: 'shutdown', submitted: true }, ctx), { kind: 'hand-back' });
  });

  test('a cancel or a lost lease lets the job go without writing anything; with a task at a provider, a cancel is checked for', () => {
    for (const reason of ['cancelled', 'lost'] as const) {
      assert.deepEqual(decideAfterRun(job(), { kind: 'aborted', reason, submitted: true }, ctx), { kind: 'let-go', cancelAtProvider: true }, reason);
      assert.deepEqual(decideAfterRun(job(), { kind: 'aborted', reason, submitted: false }, ctx), { kind: 'let-go', cancelAtProvider: false }, reason);
    }
  });

  test('provider down before submitting moves an unpinned job to the next engine, counting against the circuit', () => {
    for (const code of [ERR.provider_error, ERR.provider_timeout, ERR.provider_auth, ERR.quota_exceeded]) {
      assert.deepEqual(decideAfterRun(job(), failed(code, { retryable: true }), ctx), { kind: 'reroute', engine: 'jimeng', countsAgainstCircuit: true }, code);
    }
  });

  test('provider down does not move a pinned job, a submitted one, or one with no next engine', () => {
    const expectRetry = { kind: 'retry', delayMs: JOB_RETRY_DELAYS_MS[0], countsAgainstCircuit: true };
    assert.deepEqual(decideAfterRun(job({ enginePinned: true }), failed(ERR.provider_error, { retryable: true }), ctx), expectRetry);
    assert.deepEqual(decideAfterRun(job(), failed(ERR.provider_error, { retryable: true, submitted: true }), ctx), expectRetry);
    assert.deepEqual(decideAfterRun(job(), failed(ERR.provider_error, { retryable: true }), { ...ctx, nextEngine: null }), expectRetry);
  });

  test('a transient error retries with the ladder by attempt number, its last step repeating', () => {
    const delays = [1, 2, 3, 4, 5].map((attempts) => decideAfterRun(job({ attempts }), failed(ERR.rate_limited, { retryable: true, remote: false }), { ...ctx, maxAttempts: 10 }));
    assert.deepEqual(
      delays.map((d) => (d.kind === 'retry' ? d.delayMs : d.kind)),
      [JOB_RETRY_DELAYS_MS[0], JOB_RETRY_DELAYS_MS[1], JOB_RETRY_DELAYS_MS[2], JOB_RETRY_DELAYS_MS[2], JOB_RETRY_DELAYS_MS[2]],
    );
    assert.ok(
      delays.every((d) => d.kind === 'retry' && !d.countsAgainstCircuit),
      'not provider trouble',
    );
  });

  test('attempts exhausted: a transient error fails the job with its own code', () => {
    assert.deepEqual(decideAfterRun(job({ attempts: 3 }), failed(ERR.provider_timeout, { retryable: true, submitted: true }), ctx), {
      kind: 'settle',
      transition: 'fail',
      error: { code: ERR.provider_timeout, message: 'provider_timeout happened' },
      countsAgainstCircuit: true,
    });
  });

  test('a final error fails at once; an engine that says the deadline passed expires the job', () => {
    assert.deepEqual(decideAfterRun(job(), failed(ERR.content_moderation, { submitted: true }), ctx), {
      kind: 'settle',
      transition: 'fail',
      error: { code: ERR.content_moderation, message: 'content_moderation happened' },
      countsAgainstCircuit: false,
    });
    const expired = decideAfterRun(job(), failed(ERR.provider_timeout, { expired: true, submitted: true }), ctx);
    assert.equal(expired.kind === 'settle' && expired.transition, 'expire');
  });

  test('a local engine never moves jobs or counts against a circuit', () => {
    assert.deepEqual(decideAfterRun(job({ engine: 'local' }), failed(ERR.provider_error, { remote: false }), ctx), {
      kind: 'settle',
      transition: 'fail',
      error: { code: ERR.provider_error, message: 'provider_error happened' },
      countsAgainstCircuit: false,
    });
  });

  test('something unexpected fails the job with a stable code and no internals', () => {
    assert.deepEqual(decideAfterRun(job(), { kind: 'failed', error: null, remote: true, submitted: false }, ctx), {
      kind: 'settle',
      transition: 'fail',
      error: { code: ERR.internal_error, message: 'The worker failed while running this job.' },
      countsAgainstCircuit: false,
    });
  });
});

describe('checkClaimed', () => {
  const opts = { now: NOW, maxAttempts: 3, queueTtlMs: 60_000, jobTimeoutMs: 600_000 };

  test('a job within its limits may run', () => {
    assert.equal(checkClaimed(job({ attempts: 3 }), opts), null);
  });

  test('claimed more often than the attempts allow: failed, worker_lost', () => {
    assert.deepEqual(checkClaimed(job({ attempts: 4 }), opts)?.error.code, ERR.worker_lost);
    assert.equal(checkClaimed(job({ attempts: 4 }), opts)?.transition, 'fail');
  });

  test('first started after the queue TTL: expired, queue_ttl_exceeded', () => {
    const late = job({ createdAt: NOW - 60_001, startedAt: NOW });
    assert.deepEqual(checkClaimed(late, opts), {
      transition: 'expire',
      error: { code: ERR.queue_ttl_exceeded, message: 'The job waited in the queue longer than ZHINIAN_QUEUE_TTL_SECONDS.' },
    });
  });

  test('a job handed back after starting in time is not held to the queue TTL again', () => {
    assert.equal(checkClaimed(job({ createdAt: NOW - 120_000, startedAt: NOW - 100_000 }), opts), null);
  });

  test('running longer than the job timeout: expired, job_timeout', () => {
    assert.equal(checkClaimed(job({ startedAt: NOW - 600_001 }), opts)?.error.code, ERR.job_timeout);
  });
});
