import fs from 'node:fs';
import type http from 'node:http';
import { Worker } from 'node:worker_threads';
import { killAndWait, spawnZhinian } from './helpers.ts';

/**
 * Helpers for tests that run Zhinian as several real processes on one database: a cluster of
 * API servers and workers that can be SIGKILLed and replaced, and a webhook receiver that knows
 * which process sent each request.
 */

/** How long a process may take to boot on a loaded 2-core machine (tsx compiles on start). */
const BOOT_TIMEOUT_MS = 120_000;

export interface ClusterProcess {
  role: 'server' | 'worker';
  /** Stable name: `api0`, `api1`, `wrk0`, `wrk1` … (a replacement gets a new name). */
  name: string;
  child: ReturnType<typeof spawnZhinian>;
  pid: number;
  startedAt: number;
  /** When the test killed it: the moment it was frozen (SIGSTOP), just before SIGKILL. */
  killedAt: number | null;
  /** Exit code or signal once the process ended; set for processes that died on their own too. */
  exit: { code: number | null; signal: NodeJS.Signals | null; at: number } | null;
  /** Servers: the base URL once listening. */
  url: string | null;
  /** The process's TCP connections just before it was SIGKILLed (local and peer port). */
  tcpAtKill: { local: number; remote: number }[];
}

export interface Cluster {
  readonly processes: ClusterProcess[];
  /** Live (not killed, not exited) processes of a role. */
  alive(role: ClusterProcess['role']): ClusterProcess[];
  /** Live workers that finished booting (they log `worker started`: give workers LOG_LEVEL=info). */
  readyWorkers(): ClusterProcess[];
  startServer(): Promise<ClusterProcess>;
  /** Starts a worker; resolves at once (its boot runs in the background). */
  startWorker(): ClusterProcess;
  /** SIGKILLs the process and resolves once it has exited. */
  kill(proc: ClusterProcess): Promise<void>;
  /** Pids of processes started and not yet exited (candidates for a webhook sender). */
  livePids(): number[];
  /** Processes that exited without the test killing them (crashes). */
  crashed(): ClusterProcess[];
  /** Every output line (of any process) that contains `needle`, prefixed with the process's name. */
  linesMentioning(needle: string): string[];
  /** SIGKILLs everything still running. */
  stopAll(): Promise<void>;
  /** Calls `listener` with `livePids()` now and whenever a process starts or exits. */
  onChange(listener: (livePids: number[]) => void): void;
  /** The last `chars` of every process's output (pino info and debug lines left out), for failure messages. */
  outputs(chars?: number): string;
}

export function createCluster(env: Record<string, string>, perRole: Partial<Record<ClusterProcess['role'], Record<string, string>>> = {}): Cluster {
  const processes: ClusterProcess[] = [];
  let servers = 0;
  let workers = 0;
  let stopping = false;
  const listeners: ((livePids: number[]) => void)[] = [];
  const livePids = () => processes.filter((p) => p.exit === null).map((p) => p.pid);
  const changed = () => listeners.forEach((listener) => listener(livePids()));

  const track = (role: ClusterProcess['role'], name: string): ClusterProcess => {
    if (stopping) throw new Error(`the cluster is stopped: ${name} not started`);
    const child = spawnZhinian(role, { ...env, ...perRole[role] });
    const proc: ClusterProcess = { role, name, child, pid: child.pid!, startedAt: Date.now(), killedAt: null, exit: null, url: null, tcpAtKill: [] };
    child.once('exit', (code, signal) => {
      proc.exit = { code, signal, at: Date.now() };
      changed();
    });
    processes.push(proc);
    changed();
    return proc;
  };

  return {
    processes,
    alive: (role) => processes.filter((p) => p.role === role && p.killedAt === null && p.exit === null),
    readyWorkers: () => processes.filter((p) => p.role === 'worker' && p.killedAt === null && p.exit === null && p.child.output().includes('"msg":"worker started"')),
    async startServer() {
      const proc = track('server', `api${servers++}`);
      // Waits for the state (listening), not a fixed time: a boot takes seconds on a busy machine.
      const deadline = Date.now() + BOOT_TIMEOUT_MS;
      for (;;) {
        const url = /(?:running|listening) at (http:\/\/[^\s"]+)/.exec(proc.child.output())?.[1];
        if (url) {
          proc.url = url;
          return proc;
        }
        if (proc.exit || Date.now() > deadline) {
          throw new Error(`${proc.name} did not listen (${proc.exit ? `exited ${JSON.stringify(proc.exit)}` : `${BOOT_TIMEOUT_MS} ms`}):\n${proc.child.output().slice(-3000)}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    startWorker: () => track('worker', `wrk${workers++}`),
    async kill(proc) {
      if (proc.exit) return;
      // Frozen first, so the connections noted are all it ever had: a busy test process may
      // be descheduled between the look and the kill while the victim opens another one.
      proc.child.kill('SIGSTOP');
      await waitForState(proc.pid, 'T');
      proc.killedAt = Date.now();
      proc.tcpAtKill = tcpConnectionsOf(proc.pid);
      await killAndWait(proc.child, 'SIGKILL');
    },
    livePids,
    onChange(listener) {
      listeners.push(listener);
      listener(livePids());
    },
    crashed: () => processes.filter((p) => p.exit !== null && p.killedAt === null && !stopping),
    async stopAll() {
      stopping = true;
      await Promise.all(
        processes.map(async (p) => {
          if (p.exit) return;
          if (p.killedAt === null) p.killedAt = Date.now();
          await killAndWait(p.child, 'SIGKILL');
        }),
      );
    },
    linesMentioning(needle) {
      return processes.flatMap((p) =>
        p.child
          .output()
          .split('\n')
          .filter((line) => line.includes(needle))
          .map((line) => `${p.name}/${p.pid}: ${line}`),
      );
    },
    outputs(chars = 3000) {
      return processes
        .map((p) => {
          const out = p.child
            .output()
            .split('\n')
            .filter((line) => !/^\{"level":(10|20|30),/.test(line))
            .join('\n')
            .trim();
          return out ? `--- ${p.name} (pid ${p.pid}, exit ${JSON.stringify(p.exit)}):\n${out.slice(-chars)}` : '';
        })
        .filter(Boolean)
        .join('\n');
    },
  };
}

/** Waits (up to 10 s) until process `pid` is in `state` (`T`: stopped), or gone. */
async function waitForState(pid: number, state: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    let current: string | undefined;
    try {
      current = /^State:\s+(\w)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    } catch {
      return;
    }
    if (current === state || current === 'Z') return;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

// ---------------------------------------------------------------------------------------------
// Which local process owns a loopback TCP connection

/** Every TCP socket of this network namespace: local port, peer port, inode. */
function tcpSockets(): { local: number; remote: number; inode: string }[] {
  const sockets: { local: number; remote: number; inode: string }[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      sockets.push({ local: parseInt(cols[1]!.split(':').at(-1)!, 16), remote: parseInt(cols[2]!.split(':').at(-1)!, 16), inode: cols[9]! });
    }
  }
  return sockets;
}

/** The TCP connections process `pid` holds open (local and peer port). */
function tcpConnectionsOf(pid: number): { local: number; remote: number }[] {
  const inodes = new Set<string>();
  try {
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        const match = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (match) inodes.add(match[1]!);
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    return [];
  }
  return tcpSockets()
    .filter((s) => inodes.has(s.inode))
    .map(({ local, remote }) => ({ local, remote }));
}

// ---------------------------------------------------------------------------------------------
// A webhook receiver that records the sending process

export interface Receipt {
  path: string;
  deliveryId: string;
  event: string;
  headers: http.IncomingHttpHeaders;
  raw: string;
  body: any;
  /** When the whole request had arrived; the answer goes out at once. */
  at: number;
  /** The status this receiver answered. */
  status: number;
  /** The Zhinian process that sent it, looked up when the connection was accepted (null when it had already gone). */
  senderPid: number | null;
  /** The sender's port, to match against a killed process's connections. */
  senderPort: number;
}

export interface SenderAwareReceiver {
  base: string;
  port: number;
  /** Receipts in the order they arrived (complete once flush() has resolved). */
  receipts: Receipt[];
  byDelivery: Map<string, Receipt[]>;
  /** The processes that may be senders (pass `cluster.onChange`'s list). */
  setPids(pids: number[]): void;
  /** Resolves once every receipt so far, and the sender of each, is in `receipts`. */
  flush(): Promise<{ maxLoopLagMs: number }>;
  close(): Promise<void>;
}

const MAX_PIDS = 1024;

/**
 * A webhook receiver on loopback, on its own thread: it notes and answers each request at once,
 * however busy the test's own thread is (a sender's time limit then measures the sender, not the
 * test). `answers[path]` lists the statuses for the 1st, 2nd, … request of one X-Zhinian-Delivery
 * id on that path; every other request gets 200. Each connection's sender is looked up soon after
 * it is accepted, among the pids last given to setPids, off the answering path: the lookup reads
 * the machine's whole TCP table (thousands of sockets, tens of milliseconds), so connections are
 * looked up in batches.
 */
export async function startSenderAwareReceiver(opts: { answers?: Record<string, number[]> } = {}): Promise<SenderAwareReceiver> {
  const receipts: Receipt[] = [];
  const byDelivery = new Map<string, Receipt[]>();
  const pidOfConnection = new Map<number, number | null>();
  const receiptsOfConnection = new Map<number, Receipt[]>();
  // Slot 0: how many pids follow. Shared, so the thread reads the current list without a message.
  const pids = new Int32Array(new SharedArrayBuffer(4 * (MAX_PIDS + 1)));
  const worker = new Worker(RECEIVER_THREAD, { eval: true, workerData: { answers: opts.answers ?? {}, pids } });
  const flushes = new Map<number, (result: { maxLoopLagMs: number }) => void>();
  let flushId = 0;
  type Message =
    | { type: 'listening'; port: number }
    | { type: 'receipt'; receipt: Receipt & { connection: number } }
    | { type: 'senders'; senders: [number, number | null][] }
    | { type: 'flushed'; id: number; maxLoopLagMs: number };
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('error', reject);
    worker.on('message', (message: Message) => {
      if (message.type === 'listening') resolve(message.port);
      else if (message.type === 'receipt') {
        const { connection, ...receipt } = message.receipt;
        receipt.senderPid = pidOfConnection.get(connection) ?? null;
        receipts.push(receipt);
        byDelivery.set(receipt.deliveryId, [...(byDelivery.get(receipt.deliveryId) ?? []), receipt]);
        receiptsOfConnection.set(connection, [...(receiptsOfConnection.get(connection) ?? []), receipt]);
      } else if (message.type === 'senders') {
        for (const [connection, pid] of message.senders) {
          pidOfConnection.set(connection, pid);
          for (const receipt of receiptsOfConnection.get(connection) ?? []) receipt.senderPid = pid;
        }
      } else if (message.type === 'flushed') {
        flushes.get(message.id)?.({ maxLoopLagMs: message.maxLoopLagMs });
        flushes.delete(message.id);
      }
    });
  });
  const flush = () =>
    new Promise<{ maxLoopLagMs: number }>((resolve) => {
      const id = ++flushId;
      flushes.set(id, resolve);
      worker.postMessage({ type: 'flush', id });
    });
  return {
    base: `http://127.0.0.1:${port}`,
    port,
    receipts,
    byDelivery,
    setPids(list) {
      const n = Math.min(list.length, MAX_PIDS);
      for (let i = 0; i < n; i++) Atomics.store(pids, i + 1, list[i]!);
      Atomics.store(pids, 0, n);
    },
    flush,
    async close() {
      await flush();
      await worker.terminate();
    },
  };
}

/**
 * The receiver thread. Plain CommonJS (a worker thread does not load TypeScript here), and no
 * backslashes: the source is a template literal.
 */
const RECEIVER_THREAD = `
const fs = require('node:fs');
const http = require('node:http');
const { parentPort, workerData } = require('node:worker_threads');
const { answers, pids } = workerData;
const NEWLINE = String.fromCharCode(10);

function livePids() {
  return Array.from(pids.subarray(1, 1 + Atomics.load(pids, 0)));
}

// ---- which process holds the other end of each accepted connection, looked up in batches ----
let serverPort = 0;
let nextConnection = 0;
const connectionOf = new WeakMap();
let waiting = [];
let batchTimer = null;
let flushWaiters = [];

function lookUpSenders() {
  batchTimer = null;
  const batch = waiting;
  waiting = [];
  // The peer's end of each connection: local port = our socket's remote port, remote port = ours.
  const byPeerPort = new Map(batch.map((c) => [c.peerPort, c]));
  const hexPort = serverPort.toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Map();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text;
    try {
      text = fs.readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split(NEWLINE)) {
      if (!line.includes(':' + hexPort + ' ')) continue;
      const cols = line.split(' ').filter(Boolean);
      if (cols.length < 10) continue;
      const local = parseInt(cols[1].split(':').at(-1), 16);
      const remote = parseInt(cols[2].split(':').at(-1), 16);
      if (remote === serverPort && byPeerPort.has(local)) inodes.set('socket:[' + cols[9] + ']', byPeerPort.get(local).id);
    }
  }
  const found = new Map();
  for (const pid of livePids()) {
    if (found.size === inodes.size) break;
    let fds;
    try {
      fds = fs.readdirSync('/proc/' + pid + '/fd');
    } catch {
      continue;
    }
    for (const fd of fds) {
      let link;
      try {
        link = fs.readlinkSync('/proc/' + pid + '/fd/' + fd);
      } catch {
        continue;
      }
      if (inodes.has(link)) found.set(inodes.get(link), pid);
    }
  }
  parentPort.postMessage({ type: 'senders', senders: batch.map((c) => [c.id, found.has(c.id) ? found.get(c.id) : null]) });
  if (waiting.length === 0) {
    for (const reply of flushWaiters) reply();
    flushWaiters = [];
  }
}

// ---- how late this thread runs (a diagnostic: it should answer at once) ----
let maxLoopLagMs = 0;
let expectedTick = Date.now() + 100;
setInterval(() => {
  maxLoopLagMs = Math.max(maxLoopLagMs, Date.now() - expectedTick);
  expectedTick = Date.now() + 100;
}, 100);

const seen = new Map();
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const at = Date.now();
    const raw = Buffer.concat(chunks).toString('utf8');
    const deliveryId = String(req.headers['x-zhinian-delivery'] || '');
    const path = req.url || '';
    const earlier = seen.get(deliveryId) || 0;
    seen.set(deliveryId, earlier + 1);
    const status = (answers[path] || [])[earlier] || 200;
    res.statusCode = status;
    res.end('ok');
    let body = null;
    try {
      body = JSON.parse(raw);
    } catch {}
    parentPort.postMessage({
      type: 'receipt',
      receipt: {
        path,
        deliveryId,
        event: String(req.headers['x-zhinian-event'] || ''),
        headers: req.headers,
        raw,
        body,
        at,
        status,
        senderPid: null,
        senderPort: req.socket.remotePort || 0,
        connection: connectionOf.get(req.socket) || 0,
      },
    });
  });
});
server.on('connection', (socket) => {
  const id = ++nextConnection;
  connectionOf.set(socket, id);
  waiting.push({ id, peerPort: socket.remotePort });
  // Soon (the sender must still be alive), but once for every connection accepted meanwhile.
  if (!batchTimer) batchTimer = setTimeout(lookUpSenders, 20);
});
parentPort.on('message', (message) => {
  if (message.type !== 'flush') return;
  const reply = () => parentPort.postMessage({ type: 'flushed', id: message.id, maxLoopLagMs });
  if (waiting.length === 0) reply();
  else flushWaiters.push(reply);
});
server.listen(0, '127.0.0.1', () => {
  serverPort = server.address().port;
  parentPort.postMessage({ type: 'listening', port: serverPort });
});
`;

/** Processes (not zombies) whose environment holds `ZHINIAN_DATA_DIR=<dataDir>`: a cluster's processes and their children. */
export function processesOfDataDir(dataDir: string): { pid: number; cmd: string }[] {
  const found: { pid: number; cmd: string }[] = [];
  const needle = `ZHINIAN_DATA_DIR=${dataDir}\0`;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const state = /^State:\s+(\w)/m.exec(fs.readFileSync(`/proc/${entry}/status`, 'utf8'))?.[1];
      if (state === 'Z') continue;
      if (!fs.readFileSync(`/proc/${entry}/environ`, 'utf8').includes(needle)) continue;
      found.push({ pid: Number(entry), cmd: fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ').trim() });
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}
