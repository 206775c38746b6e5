import type { AssetService, Store } from '../assets/index.ts';
import type { ClientAdmin, ClientDirectory } from '../clients/index.ts';
import type { Config } from '../config/index.ts';
import type { DbHandle } from '../db/index.ts';
import type { EngineRegistry } from '../engines/registry.ts';
import type { JobService } from '../jobs/index.ts';
import type { Clock } from '../lib/clock.ts';
import type { Notifier } from '../lib/notifier.ts';
import type { LiveStatus } from '../live/index.ts';
import type { LoginTokens } from './login-tokens.ts';
import type { Sessions } from './session.ts';

/** What the console's routes work with (wired in cli/boot.ts). */
export interface ConsoleDeps {
  handle: DbHandle;
  config: Readonly<Config>;
  /** Key of the console's signed cookies (ZHINIAN_SESSION_SECRET, or the data dir's). */
  sessionSecret: string;
  sessions: Sessions;
  loginTokens: LoginTokens;
  clock: Clock;
  baseUrl: () => string;
  jobs: JobService;
  assets: AssetService;
  store: Store;
  engines: EngineRegistry;
  clients: ClientDirectory;
  /** Clients and keys as the console manages them. */
  clientAdmin: ClientAdmin;
  /** Wakes workers when a job or delivery becomes due (a redelivery). */
  notifier: Notifier;
  /** Job change notices: the job page and the running rows update from them. */
  live: LiveStatus;
}
