import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import os from 'node:os';
import { type CompiledQuery, type DatabaseConnection, type Driver, Kysely, type QueryResult, sql, SqliteAdapter, SqliteIntrospector, SqliteQueryCompiler } from 'kysely';
import type { Database, Db, DbHandle } from '../../db/index.ts';
import { ERR } from '../../lib/error-codes.ts';
import { AppError } from '../../lib/errors.ts';

/**
 * The console's reads, kept from stalling the API. The console's queries range over every
 * client's jobs, so some (a filtered job list, the overview's groupings) read many rows; the
 * API must answer meanwhile, and a query must end.
 *  - Every console query runs with a time limit (`timeLimitMs`); past it the request gets a
 *    503 `query_timeout` and the query is stopped.
 *  - At most `concurrency` console queries run at once per process; more wait in line (within
 *    the same time limit), so a room full of console tabs cannot take every database
 *    connection or core from the API.
 *  - SQLite: better-sqlite3 is synchronous, so a query on the main thread blocks every request
 *    of the process. Console queries run instead in reader processes (a child process each,
 *    holding its own read-only connection to the same WAL file: readers never block the writer;
 *    run at a lower CPU priority, so on a busy machine the API's process is scheduled first),
 *    and a query past its time limit is stopped by killing its process (better-sqlite3 cannot
 *    interrupt a statement, nor can terminating a worker thread stop native code). A new
 *    process is started for the next query.
 *  - PostgreSQL: the queries of one console call run in one read transaction with
 *    `SET LOCAL statement_timeout`: the server cancels a query past the limit.
 */
export interface ReaderOptions {
  /** Longest a console query may take, waiting in line included. */
  timeLimitMs: number;
  /** Console queries running at once per process. */
  concurrency: number;
  /** More than this many waiting: refused at once. */
  maxWaiting: number;
}

let defaults: ReaderOptions = { timeLimitMs: 10_000, concurrency: 2, maxWaiting: 64 };

/** A console query that ran past its time limit, or could not start within it. */
export class QueryTimeout extends AppError {
  constructor(limitMs: number) {
    super(ERR.query_timeout, `The query took longer than ${Math.round(limitMs / 100) / 10} s and was stopped; narrow the filter (fewer days, one client) or try again.`);
  }
}

interface Reader {
  options: ReaderOptions;
  read<T>(fn: (db: Db) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

const readers = new WeakMap<DbHandle, Reader>();

/**
 * Runs the console's queries in `fn` on the handle's reader: with the time limit, off the main
 * thread on SQLite. `fn` only reads (SQLite's reader connection is read-only) and must not call
 * `readConsole` again (it would wait for a second turn while holding one).
 */
export function readConsole<T>(handle: DbHandle, fn: (db: Db) => Promise<T>): Promise<T> {
  return readerOf(handle).read(fn);
}

/** Sets the options of readers made from now on (tests shorten the time limit before a stack's first console query). */
export function setConsoleReaderDefaults(options: Partial<ReaderOptions>): void {
  defaults = { ...defaults, ...options };
}

/** Stops the handle's reader processes (the console's routes close it with the server). */
export async function closeConsoleReader(handle: DbHandle): Promise<void> {
  const reader = readers.get(handle);
  readers.delete(handle);
  await reader?.close();
}

function readerOf(handle: DbHandle): Reader {
  let reader = readers.get(handle);
  if (!reader) {
    reader = createReader(handle, defaults);
    readers.set(handle, reader);
  }
  return reader;
}

function createReader(handle: DbHandle, options: ReaderOptions): Reader {
  return handle.dialect === 'postgres' ? postgresReader(handle, options) : sqliteReader(handle, options);
}

/** Turns: at most `size` holders; a waiter gives up at its deadline. */
class Turns {
  private free: number;
  private readonly waiting: { grant: () => void; timer: NodeJS.Timeout }[] = [];
  constructor(
    size: number,
    private readonly maxWaiting: number,
  ) {
    this.free = size;
  }

  /** Resolves once a turn is ours; rejects with `onTimeout()` at `deadline`. */
  take(deadline: number, onTimeout: () => Error): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    if (this.waiting.length >= this.maxWaiting) return Promise.reject(onTimeout());
    return new Promise((resolve, reject) => {
      const entry = {
        grant: () => {
          clearTimeout(entry.timer);
          resolve();
        },
        timer: setTimeout(
          () => {
            this.waiting.splice(this.waiting.indexOf(entry), 1);
            reject(onTimeout());
          },
          Math.max(0, deadline - Date.now()),
        ),
      };
      this.waiting.push(entry);
    });
  }

  give(): void {
    const next = this.waiting.shift();
    if (next) next.grant();
    else this.free++;
  }
}

// ---- PostgreSQL ----

/** query_canceled: statement_timeout (or a cancel request). */
const PG_QUERY_CANCELED = '57014';

function postgresReader(handle: DbHandle, options: ReaderOptions): Reader {
  const turns = new Turns(options.concurrency, options.maxWaiting);
  return {
    options,
    async read(fn) {
      const deadline = Date.now() + options.timeLimitMs;
      await turns.take(deadline, () => new QueryTimeout(options.timeLimitMs));
      try {
        // What is left of the limit after waiting in line; each statement gets that much.
        const limitMs = Math.max(1, Math.ceil(deadline - Date.now()));
        return await handle.db.transaction().execute(async (tx) => {
          await sql`set local statement_timeout = ${sql.lit(limitMs)}`.execute(tx);
          await sql`set transaction read only`.execute(tx);
          return fn(tx);
        });
      } catch (error) {
        if ((error as { code?: unknown }).code === PG_QUERY_CANCELED) throw new QueryTimeout(options.timeLimitMs);
        throw error;
      } finally {
        turns.give();
      }
    },
    async close() {},
  };
}

// ---- SQLite ----

/**
 * A reader process: plain JavaScript (no TypeScript loader needed, the same in the built
 * package), given better-sqlite3's path and the database file. One query at a time, answered by
 * id; it exits when the server goes away (its IPC channel closes).
 */
const READER_SOURCE = `
const [modulePath, file] = process.argv.slice(1);
const Database = require(modulePath);
const db = new Database(file, { readonly: true, fileMustExist: true });
db.pragma('busy_timeout = 10000');
const statements = new Map();
process.on('message', (m) => {
  try {
    let stmt = statements.get(m.sql);
    if (!stmt) {
      if (statements.size >= 200) statements.clear();
      stmt = db.prepare(m.sql);
      statements.set(m.sql, stmt);
    }
    if (!stmt.reader) throw new Error('the console reader only reads');
    process.send({ id: m.id, rows: stmt.all(m.params) });
  } catch (error) {
    process.send({ id: m.id, error: String((error && error.message) || error) });
  }
});
process.on('disconnect', () => process.exit(0));
// Ctrl-C reaches the whole process group: the server decides when to stop, and this ends with it.
process.on('SIGINT', () => {});
`;

const SQLITE_MODULE = createRequire(import.meta.url).resolve('better-sqlite3');
/** The reader processes' niceness (0 normal, 19 lowest): the scheduler favours the API's process over them. */
const READER_NICENESS = 10;

interface Pending {
  resolve: (rows: unknown[]) => void;
  reject: (error: Error) => void;
}

/** One reader process and the query it is running. */
class ReaderProcess {
  private readonly child: ChildProcess;
  private nextId = 0;
  private pending: { id: number; pending: Pending } | null = null;
  dead = false;

  constructor(file: string) {
    const env = { ...process.env };
    // The parent's loader flags (a TypeScript loader in development) are not needed here.
    delete env.NODE_OPTIONS;
    this.child = spawn(process.execPath, ['-e', READER_SOURCE, SQLITE_MODULE, file], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
      env,
    });
    this.child.on('message', (m: { id: number; rows?: unknown[]; error?: string }) => {
      if (!this.pending || this.pending.id !== m.id) return;
      const { pending } = this.pending;
      this.pending = null;
      if (m.error !== undefined) pending.reject(new Error(m.error));
      else pending.resolve(m.rows ?? []);
    });
    const gone = (why: string) => {
      this.dead = true;
      const p = this.pending;
      this.pending = null;
      p?.pending.reject(new Error(`the console's reader process ${why}`));
    };
    this.child.on('exit', (code, signal) => gone(`exited (${signal ?? code})`));
    this.child.on('error', (error) => gone(`failed: ${error.message}`));
    // Background work: when the cores are busy, the API's process goes first.
    try {
      if (this.child.pid !== undefined) os.setPriority(this.child.pid, READER_NICENESS);
    } catch {
      // not allowed here: it runs at the server's priority
    }
    // A reader never keeps the server's process alive.
    this.child.unref();
    (this.child.channel as { unref?: () => void } | undefined)?.unref?.();
  }

  run(query: string, params: readonly unknown[]): Promise<unknown[]> {
    return new Promise((resolve, reject) => {
      if (this.dead) return reject(new Error("the console's reader process is gone"));
      const id = ++this.nextId;
      this.pending = { id, pending: { resolve, reject } };
      this.child.send({ id, sql: query, params });
    });
  }

  kill(): void {
    this.dead = true;
    this.child.kill('SIGKILL');
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.kill();
    await exited;
  }
}

function sqliteReader(handle: DbHandle, options: ReaderOptions): Reader {
  const turns = new Turns(options.concurrency, options.maxWaiting);
  const idle: ReaderProcess[] = [];
  const all = new Set<ReaderProcess>();
  let file: Promise<string> | null = null;
  let closed = false;

  const databaseFile = async (): Promise<string> => {
    const { rows } = await sql<{ name: string; file: string }>`pragma database_list`.execute(handle.db);
    const main = rows.find((r) => r.name === 'main');
    if (!main?.file) throw new Error('the SQLite database has no file for the console reader');
    return main.file;
  };

  /** One statement: a turn, an idle process (or a new one), the answer or the kill at the deadline. */
  async function execute(query: CompiledQuery): Promise<QueryResult<unknown>> {
    if (closed) throw new Error("the console's reader is closed");
    const deadline = Date.now() + options.timeLimitMs;
    await turns.take(deadline, () => new QueryTimeout(options.timeLimitMs));
    let proc: ReaderProcess | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      file ??= databaseFile().catch((error) => {
        file = null; // asked again next time
        throw error;
      });
      const path = await file;
      proc = idle.pop() ?? new ReaderProcess(path);
      all.add(proc);
      const running = proc;
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => {
            running.kill();
            reject(new QueryTimeout(options.timeLimitMs));
          },
          Math.max(0, deadline - Date.now()),
        );
      });
      const rows = await Promise.race([running.run(query.sql, query.parameters), timedOut]);
      return { rows };
    } finally {
      clearTimeout(timer);
      if (proc) {
        if (proc.dead || closed) {
          all.delete(proc);
          if (!proc.dead) await proc.close();
        } else idle.push(proc);
      }
      turns.give();
    }
  }

  const connection: DatabaseConnection = {
    executeQuery: execute as DatabaseConnection['executeQuery'],
    streamQuery() {
      throw new Error("the console's reader does not stream");
    },
  };
  const driver: Driver = {
    async init() {},
    async acquireConnection() {
      return connection;
    },
    async beginTransaction() {
      throw new Error("the console's reader runs no transactions");
    },
    async commitTransaction() {},
    async rollbackTransaction() {},
    async releaseConnection() {},
    async destroy() {},
  };
  const db = new Kysely<Database>({
    dialect: {
      createAdapter: () => new SqliteAdapter(),
      createDriver: () => driver,
      createQueryCompiler: () => new SqliteQueryCompiler(),
      createIntrospector: (k) => new SqliteIntrospector(k),
    },
  });

  return {
    options,
    read: (fn) => fn(db),
    async close() {
      closed = true;
      const procs = [...all];
      all.clear();
      idle.length = 0;
      await Promise.all(procs.map((p) => p.close()));
    },
  };
}
