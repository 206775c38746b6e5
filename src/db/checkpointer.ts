import { Worker } from 'node:worker_threads';

// Runs in a worker thread with its own connection: the fsync of a WAL checkpoint then stalls
// no request. PASSIVE never waits for (or blocks) readers and writers.
const SOURCE = `
const { workerData, parentPort } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file);
db.pragma('busy_timeout = 1000');
const timer = setInterval(() => {
  try { db.pragma('wal_checkpoint(PASSIVE)'); } catch {}
}, workerData.intervalMs);
parentPort.on('message', () => { clearInterval(timer); db.close(); process.exit(0); });
`;

/**
 * Moves SQLite's WAL checkpoints off the event loop. Connections of this process turn their
 * automatic checkpoint off (it would run inside some request's commit, fsync included: ~10 ms
 * quiet, far more under load, which is what set the p99 of writes); this thread checkpoints on
 * a timer instead. Several processes may each run one: SQLite serialises checkpoints.
 */
export function startCheckpointer(file: string, intervalMs = 1000): { stop(): Promise<void> } {
  const worker = new Worker(SOURCE, {
    eval: true,
    workerData: { file, intervalMs, driver: import.meta.resolve('better-sqlite3').replace(/^file:\/\//, '') },
  });
  worker.unref();
  return {
    async stop() {
      const exited = new Promise((resolve) => worker.once('exit', resolve));
      worker.ref(); // keep the process alive until the thread has closed its connection
      worker.postMessage('stop');
      await exited;
    },
  };
}
