import type { ClientDirectory, ClientSettings } from '../clients/index.ts';
import type { AssetService } from '../assets/index.ts';
import { isTerminal, toJob, type Job } from '../contract/index.ts';
import type { DbHandle, JobsTable } from '../db/index.ts';
import { keysetPage, retryOnSortKeyConflict, withTransaction } from '../db/index.ts';
import type { EngineRegistry } from '../engines/registry.ts';
import type { Clock } from '../lib/clock.ts';
import { canonicalJson, sha256Hex } from '../lib/canonical-json.ts';
import { ERR } from '../lib/error-codes.ts';
import { Conflict, Invalid, NotFound, RateLimited } from '../lib/errors.ts';
import { isId, newId } from '../lib/ids.ts';
import type { Notifier } from '../lib/notifier.ts';
import { createGroupCommit } from '../lib/group-commit.ts';
import { parseWith } from '../lib/validate.ts';
import { fairKeys, insertQueuedJob, settleJob } from '../queue/index.ts';
import { claimIdempotencyKey, findKeyedJob } from './idempotency-keys.ts';
import { takeRateSlot } from './rate-limit.ts';
import { listJobsQuerySchema, withoutNullFields } from './request.ts';
import { validateJobRequest, type ValidatedJob } from './validate.ts';
import { createJobPresenter } from './present.ts';

export interface JobServiceDeps {
  handle: DbHandle;
  engines: EngineRegistry;
  /** Kinds of a client's own assets, to check a job's inputs: the asset service's `kindsOf`. */
  assetKinds: AssetService['kindsOf'];
  notifier: Notifier;
  clock: Clock;
  allowPrivateUrls: boolean;
  /** Per-client limits: the job-creation rate limit and the fairness weight. */
  clients: ClientDirectory;
  /** ZHINIAN_MAX_ATTEMPTS, for "attempt n of m" in `statusDetail`. */
  maxAttempts: number;
}

export type JobService = ReturnType<typeof createJobService>;

const IDEMPOTENCY_KEY = /^[\x20-\x7e]{1,255}$/;

export function createJobService(deps: JobServiceDeps) {
  const { handle, notifier, clock } = deps;
  const present = createJobPresenter({ engines: deps.engines, clients: deps.clients, clock, maxAttempts: deps.maxAttempts });
  const { db } = handle;

  async function findByKey(clientId: string, key: string, requestHash: string): Promise<Job | null> {
    const row = await findKeyedJob(db, clientId, key);
    if (!row) return null;
    if (row.request_hash !== requestHash) {
      throw new Conflict('Idempotency-Key was already used with a different request body.', ERR.idempotency_conflict);
    }
    return present.job(db, row);
  }

  interface NewJob {
    clientId: string;
    idempotencyKey: string | undefined;
    requestHash: string;
    v: ValidatedJob;
    limits: ClientSettings;
    now: number;
  }

  /**
   * Inserts jobs (with their idempotency keys) in group commits. A key row that already
   * exists means a racing request with the same key won: that item gets null. A client over
   * its rate limit gets the error. On PostgreSQL a concurrent writer may take the same sort
   * key: the whole batch is then written again.
   */
  const insertJob = createGroupCommit<NewJob, JobsTable | RateLimited | null>((items) =>
    retryOnSortKeyConflict(() =>
      withTransaction(handle, async (tx) => {
        const rows: (JobsTable | RateLimited | null)[] = [];
        const keys = fairKeys(tx);
        for (const { clientId, idempotencyKey, requestHash, v, limits, now } of items) {
          const rateLimit = limits.rateLimitJobsPerMinute;
          const id = newId('job');
          // Counted before the key: a racing duplicate that loses below spends a slot, which errs
          // on the strict side in a rare race instead of costing every creation a statement.
          const limited = rateLimit > 0 ? await takeRateSlot(tx, clientId, now, rateLimit) : null;
          if (limited) {
            rows.push(limited);
            continue;
          }
          if (idempotencyKey !== undefined) {
            const claimed = await claimIdempotencyKey(tx, { clientId, key: idempotencyKey, requestHash, jobId: id, now });
            if (!claimed) {
              rows.push(null);
              continue;
            }
          }
          rows.push(
            await insertQueuedJob(
              tx,
              handle.dialect,
              {
                id,
                clientId,
                capability: v.capability,
                prompt: v.prompt,
                params: v.params,
                inputAssetIds: v.inputAssetIds,
                engine: v.engine,
                enginePinned: v.enginePinned,
                webhookUrl: v.webhookUrl,
                metadata: v.metadata,
                weight: limits.weight,
                now,
              },
              { fairKey: await keys.next(v.engine, clientId, limits.weight) },
            ),
          );
        }
        return rows;
      }),
    ),
  );

  return {
    /** Rows as the API shows them (with `statusDetail`), for the live events and the console. */
    present,
    /**
     * Creates a job, or returns the one an earlier request with the same Idempotency-Key made.
     * The key row and the job are inserted in one transaction under the unique (client, key)
     * index, so racing duplicates make exactly one job.
     */
    async create(clientId: string, rawBody: unknown, idempotencyKey: string | undefined): Promise<{ job: Job; reused: boolean }> {
      if (idempotencyKey !== undefined && !IDEMPOTENCY_KEY.test(idempotencyKey)) {
        throw new Invalid('Idempotency-Key', 'must be 1–255 printable ASCII characters');
      }
      const body = withoutNullFields(rawBody);
      const requestHash = idempotencyKey === undefined ? '' : sha256Hex(canonicalJson(body));
      if (idempotencyKey !== undefined) {
        const existing = await findByKey(clientId, idempotencyKey, requestHash);
        if (existing) return { job: existing, reused: true };
      }
      const settings = await deps.clients.settingsOf(clientId);
      const v = await validateJobRequest(body, {
        assetKinds: deps.assetKinds,
        clientId,
        engines: deps.engines,
        allowPrivateUrls: deps.allowPrivateUrls,
        allowedEngines: settings.allowedEngines,
      });
      const now = clock.now();
      const created = await insertJob({ clientId, idempotencyKey, requestHash, v, limits: settings, now });
      if (created instanceof RateLimited) throw created;
      if (!created) {
        const winner = await findByKey(clientId, idempotencyKey!, requestHash);
        if (!winner) throw new Error('idempotency key vanished during a race');
        return { job: winner, reused: true };
      }
      notifier.jobQueued();
      return { job: await present.job(db, created), reused: false };
    },

    async get(clientId: string, id: string): Promise<Job> {
      const watched = await this.watched(clientId, id);
      if (!watched) throw new NotFound('Job');
      return watched.job;
    },

    /**
     * A job with its version, for watchers (event streams, `Prefer: wait`): the caller's own, or
     * with `clientId` null any client's (the console). Null: no such job.
     */
    async watched(clientId: string | null, id: string): Promise<{ job: Job; version: number } | null> {
      if (!isId('job', id)) return null;
      let select = db.selectFrom('jobs').selectAll().where('id', '=', id);
      if (clientId !== null) select = select.where('client_id', '=', clientId);
      const row = await select.executeTakeFirst();
      return row ? { job: await present.job(db, row), version: Number(row.version) } : null;
    },

    /** Newest first. The cursor is exclusive and sort keys are unique, so pages never overlap or skip. */
    async list(clientId: string, query: unknown): Promise<{ jobs: Job[]; nextBefore: string | null }> {
      const q = parseWith(listJobsQuerySchema, query, 'query parameter');
      const limit = q.limit ?? 20;
      let select = db.selectFrom('jobs').selectAll().where('client_id', '=', clientId);
      if (q.status) select = select.where('status', '=', q.status);
      if (q.capability) select = select.where('capability', '=', q.capability);
      const { rows, nextBefore } = await keysetPage(select, { before: q.before, limit });
      return { jobs: await present.jobs(db, rows), nextBefore };
    },

    async cancel(clientId: string, id: string): Promise<Job> {
      if (!isId('job', id)) throw new NotFound('Job');
      const row = await settleJob(handle, notifier, { jobId: id, clientId, transition: 'cancel', error: null, now: clock.now() });
      if (row) {
        notifier.jobCancelled(id);
        return toJob(row);
      }
      const job = await this.get(clientId, id);
      if (isTerminal(job.status)) throw new Conflict(`Job is already ${job.status}.`, ERR.job_terminal);
      throw new Conflict('Job changed while being cancelled; try again.');
    },
  };
}
