import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { killAndWait, listeningUrl, spawnZhinian } from './helpers.ts';

/**
 * Helpers for tests that run Zhinian as several real processes on one database: a cluster of
 * API servers and workers that can be SIGKILLed and replaced, and a webhook receiver that knows
 * which process sent each request.
 */

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
  /** The last `chars` of every process's output (pino info and debug lines left out), for failure messages. */
  outputs(chars?: number): string;
}

export function createCluster(env: Record<string, string>, perRole: Partial<Record<ClusterProcess['role'], Record<string, string>>> = {}): Cluster {
  const processes: ClusterProcess[] = [];
  let servers = 0;
  let workers = 0;
  let stopping = false;

  const track = (role: ClusterProcess['role'], name: string): ClusterProcess => {
    if (stopping) throw new Error(`the cluster is stopped: ${name} not started`);
    const child = spawnZhinian(role, { ...env, ...perRole[role] });
    const proc: ClusterProcess = { role, name, child, pid: child.pid!, startedAt: Date.now(), killedAt: null, exit: null, url: null, tcpAtKill: [] };
    child.once('exit', (code, signal) => {
      proc.exit = { code, signal, at: Date.now() };
    });
    processes.push(proc);
    return proc;
  };

  return {
    processes,
    alive: (role) => processes.filter((p) => p.role === role && p.killedAt === null && p.exit === null),
    readyWorkers: () => processes.filter((p) => p.role === 'worker' && p.killedAt === null && p.exit === null && p.child.output().includes('"msg":"worker started"')),
    async startServer() {
      const proc = track('server', `api${servers++}`);
      proc.url = await listeningUrl(proc.child);
      return proc;
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
    livePids: () => processes.filter((p) => p.exit === null).map((p) => p.pid),
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

/** Waits (up to 2 s) until process `pid` is in `state` (`T`: stopped), or gone. */
async function waitForState(pid: number, state: string): Promise<void> {
  const deadline = Date.now() + 2_000;
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

/** Inode of the socket whose local port is `localPort` and peer port `remotePort`. */
function socketInode(localPort: number, remotePort: number): string | null {
  return tcpSockets().find((s) => s.local === localPort && s.remote === remotePort)?.inode ?? null;
}

/** The TCP connections process `pid` holds open (local and peer port). */
export function tcpConnectionsOf(pid: number): { local: number; remote: number }[] {
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

/** Which of `pids` holds socket `inode` open, or null. */
function pidHoldingSocket(inode: string, pids: number[]): number | null {
  const target = `socket:[${inode}]`;
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === target) return pid;
      } catch {
        // closed meanwhile
      }
    }
  }
  return null;
}

/** The pid (among `pids`) of the process at the other end of an accepted loopback connection. */
export function peerPid(socket: Socket, pids: number[]): number | null {
  const serverPort = socket.localPort;
  const clientPort = socket.remotePort;
  if (!serverPort || !clientPort) return null;
  const inode = socketInode(clientPort, serverPort);
  return inode ? pidHoldingSocket(inode, pids) : null;
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
  /** When the whole request had arrived. */
  at: number;
  /** The status this receiver answered. */
  status: number;
  /** The Zhinian process that sent it, looked up when the connection was accepted (null when it had already gone). */
  senderPid: number | null;
  /** The sender's port, to match against a killed process's connections. */
  senderPort: number;
}

/**
 * A webhook receiver on loopback. `answer` gets the receipt and the earlier receipts of the same
 * X-Zhinian-Delivery id, and returns the status to answer. Each connection's sender is looked up
 * once, when it is accepted.
 */
export async function startSenderAwareReceiver(opts: { pids: () => number[]; answer: (receipt: Receipt, earlier: Receipt[]) => number }) {
  const receipts: Receipt[] = [];
  const byDelivery = new Map<string, Receipt[]>();
  const senders = new WeakMap<Socket, number | null>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: any = null;
      try {
        body = JSON.parse(raw);
      } catch {
        // kept as raw; the test fails on it
      }
      const deliveryId = String(req.headers['x-zhinian-delivery'] ?? '');
      const receipt: Receipt = {
        path: req.url ?? '',
        deliveryId,
        event: String(req.headers['x-zhinian-event'] ?? ''),
        headers: req.headers,
        raw,
        body,
        at: Date.now(),
        status: 0,
        senderPid: senders.get(req.socket) ?? null,
        senderPort: req.socket.remotePort ?? 0,
      };
      const earlier = byDelivery.get(deliveryId) ?? [];
      receipt.status = opts.answer(receipt, earlier);
      byDelivery.set(deliveryId, [...earlier, receipt]);
      receipts.push(receipt);
      res.statusCode = receipt.status;
      res.end('ok');
    });
  });
  server.on('connection', (socket: Socket) => senders.set(socket, peerPid(socket, opts.pids())));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    base: `http://127.0.0.1:${port}`,
    port,
    receipts,
    byDelivery,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

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
