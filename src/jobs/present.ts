import type { ClientDirectory } from '../clients/index.ts';
import { toJob, type Job } from '../contract/index.ts';
import type { JobsTable, Tx } from '../db/index.ts';
import { isRemoteEngine } from '../engines/engine.ts';
import type { EngineRegistry } from '../engines/registry.ts';
import type { Clock } from '../lib/clock.ts';
import { statusDetailsOf, type QueueFactsContext } from '../queue/status-detail.ts';

export interface JobPresenterDeps {
  engines: EngineRegistry;
  clients: ClientDirectory;
  clock: Clock;
  /** ZHINIAN_MAX_ATTEMPTS. */
  maxAttempts: number;
}

export type JobPresenter = ReturnType<typeof createJobPresenter>;

/**
 * Job rows as the API shows them, with `statusDetail` from the queue's real state: what the API,
 * the live events and the console all answer with.
 */
export function createJobPresenter(deps: JobPresenterDeps) {
  const context = (): QueueFactsContext => ({
    now: deps.clock.now(),
    maxAttempts: deps.maxAttempts,
    maxRunningOf: async (clientId) => (await deps.clients.settingsOf(clientId)).maxRunning,
    engineCapOf: (name) => {
      const engine = deps.engines.get(name);
      return engine && isRemoteEngine(engine) ? engine.maxConcurrency : undefined;
    },
  });
  return {
    async jobs(db: Tx, rows: readonly JobsTable[]): Promise<Job[]> {
      const details = await statusDetailsOf(db, rows, context());
      return rows.map((row, i) => toJob(row, details[i] ?? null));
    },
    async job(db: Tx, row: JobsTable): Promise<Job> {
      const [job] = await this.jobs(db, [row]);
      return job!;
    },
  };
}
