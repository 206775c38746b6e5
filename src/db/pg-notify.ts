import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import { outageBackoffMs } from '../lib/retry-ladders.ts';
import { createNotifier, type Notifier } from '../lib/notifier.ts';
import type { DbHandle } from './connect.ts';

export interface PgNotifierOptions {
  handle: DbHandle;
  /** The same URL as the pool's (schema included): the channel is per schema. */
  url: string;
  logger: Logger;
  /** Whether this process listens (workers for wake-ups, servers for the live status); otherwise it just sends. */
  listen: boolean;
}

export type PgNotifier = Notifier & { close(): Promise<void> };

type Message = { e: 'q' } | { e: 'w' } | { e: 'c'; id: string } | { e: 'j'; c: [string, number][] };

/**
 * The schema's channel, as SQL: notifications are database-wide, so one channel per schema keeps
 * deployments (and test runs) apart. Channel names are identifiers (at most 63 bytes): a long
 * schema name is hashed. Transitions NOTIFY on it inside their transaction (queue/recording.ts).
 */
export const JOB_CHANNEL_SQL = sql<string>`'zhinian_' || case when octet_length(current_schema()) <= 48 then current_schema() else left(encode(sha256(convert_to(current_schema(), 'UTF8')), 'hex'), 32) end`;

/**
 * Wake-ups across processes over LISTEN/NOTIFY. Every event is emitted in this process at once
 * (as `createNotifier` does) and sent as a NOTIFY; other processes' listeners turn it back into
 * a local event. A notification is only a hint: when the LISTEN connection is down, the pumps'
 * polling still finds the work, and on reconnect everyone is woken once to catch up on what was
 * missed.
 *
 * jobQueued and webhookDue carry no data, so while one NOTIFY is in flight further ones fold
 * into a single follow-up: a burst of 500 created jobs costs a few notifications, not 500.
 * Job changes (`e: 'j'`) are sent by the transitions themselves, in their transaction
 * (queue/recording.ts), and reach every listening process, this one included; `jobChanged` here
 * only announces locally (listeners compare versions, so hearing it twice is harmless).
 */
export async function createPgNotifier(opts: PgNotifierOptions): Promise<PgNotifier> {
  const local = createNotifier();
  const self = randomUUID();
  const channel = await channelFor(opts.handle);
  let closed = false;

  const inFlight = { q: false, w: false };
  const again = { q: false, w: false };
  const send = (message: Exclude<Message, { e: 'j' }>): void => {
    if (closed) return;
    if (message.e !== 'c') {
      if (inFlight[message.e]) {
        again[message.e] = true;
        return;
      }
      inFlight[message.e] = true;
    }
    const payload = JSON.stringify({ ...message, from: self });
    sql`select pg_notify(${channel}, ${payload})`
      .execute(opts.handle.db)
      .catch((error) => opts.logger.warn({ err: error }, 'NOTIFY failed; other processes will poll'))
      .finally(() => {
        if (message.e === 'c') return;
        inFlight[message.e] = false;
        if (again[message.e]) {
          again[message.e] = false;
          send(message);
        }
      });
  };

  const receive = (payload: string | undefined): void => {
    let message: (Message & { from?: string }) | null = null;
    try {
      message = JSON.parse(payload ?? '');
    } catch {
      return;
    }
    if (!message) return;
    if (message.e === 'j') {
      if (Array.isArray(message.c)) for (const [id, version] of message.c) local.jobChanged(id, version);
      return;
    }
    if (message.from === self) return;
    if (message.e === 'q') local.jobQueued();
    else if (message.e === 'w') local.webhookDue();
    else if (message.e === 'c' && typeof message.id === 'string') local.jobCancelled(message.id);
  };

  // One dedicated connection holds the LISTEN (a pooled one would be handed to queries).
  let client: pg.Client | null = null;
  let retryTimer: NodeJS.Timeout | null = null;
  let failures = 0;
  const connect = async (): Promise<void> => {
    retryTimer = null;
    if (closed) return;
    const c = new pg.Client({ connectionString: opts.url, keepAlive: true, connectionTimeoutMillis: 5_000 });
    let lost = false;
    const onLost = (error?: Error) => {
      if (lost) return;
      lost = true;
      if (client === c) client = null;
      c.end().catch(() => {});
      if (closed) return;
      failures++;
      const delay = outageBackoffMs(failures);
      opts.logger.warn({ err: error, retryInMs: delay }, 'LISTEN connection lost; polling until it is back');
      retryTimer = setTimeout(() => void connect(), delay);
      retryTimer.unref();
    };
    c.on('error', onLost);
    c.on('end', () => onLost());
    c.on('notification', (n) => receive(n.payload));
    try {
      await c.connect();
      await c.query(`LISTEN ${quoteIdent(channel)}`);
    } catch (error) {
      onLost(error as Error);
      return;
    }
    if (closed) {
      await c.end().catch(() => {});
      return;
    }
    client = c;
    if (failures > 0) {
      opts.logger.info('LISTEN connection restored');
      // Whatever was notified while we were away: look once now.
      local.jobQueued();
      local.webhookDue();
      local.resync();
    }
    failures = 0;
  };
  if (opts.listen) await connect();

  return {
    jobQueued() {
      local.jobQueued();
      send({ e: 'q' });
    },
    jobCancelled(jobId) {
      local.jobCancelled(jobId);
      send({ e: 'c', id: jobId });
    },
    webhookDue() {
      local.webhookDue();
      send({ e: 'w' });
    },
    jobChanged: local.jobChanged,
    resync: local.resync,
    on: local.on,
    async close() {
      closed = true;
      if (retryTimer) clearTimeout(retryTimer);
      const c = client;
      client = null;
      await c?.end().catch(() => {});
    },
  };
}

async function channelFor(handle: DbHandle): Promise<string> {
  const { rows } = await sql<{ channel: string }>`select ${JOB_CHANNEL_SQL} as channel`.execute(handle.db);
  return rows[0]!.channel;
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
