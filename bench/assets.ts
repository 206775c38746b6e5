/**
 * Scenario 5: a 200 MB asset downloaded 3× in a row, and a 40 MB multipart upload 3× in a row,
 * against the Zhinian API in a child process; the baseline is a plain node:http child piping
 * fs.createReadStream (download) or the raw request body into a file (upload). The server's
 * RSS is sampled every 50 ms from /proc; growth = peak − the sample before the first transfer
 * (taken after one small warm-up request).
 */
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createAssetService, createLocalStore, hashFile } from '../src/assets/index.ts';
import { systemClock } from '../src/lib/clock.ts';
import {
  authHeaders,
  CLIENT_ID,
  fmt,
  freshStore,
  info,
  judged,
  MB,
  openStore,
  ratioOf,
  sampleRss,
  sleep,
  startBaseline,
  startZhinianServer,
  tempDir,
  type Child,
  type Row,
  type Store,
} from './lib.ts';

const BIG = 200 * MB;
const UPLOAD = 40 * MB;
const TIMES = 3;
const MAX_RSS_GROWTH_MB = 30;

async function writeRandomFile(file: string, bytes: number): Promise<void> {
  const chunk = Buffer.alloc(4 * MB);
  const out = await fs.promises.open(file, 'w');
  try {
    for (let written = 0; written < bytes; written += chunk.length) {
      randomFillSync(chunk);
      await out.write(chunk, 0, Math.min(chunk.length, bytes - written));
    }
  } finally {
    await out.close();
  }
}

/** Places the file as an asset of the bench client with the asset service; returns its id and stored path. */
async function placeAsset(data: Store, file: string): Promise<{ id: string; storedPath: string }> {
  const { dataDir } = data;
  const handle = await openStore(data);
  try {
    const store = createLocalStore(path.join(dataDir, 'assets'));
    const service = createAssetService({
      handle,
      store,
      clock: systemClock,
      tempDir: path.join(dataDir, 'tmp'),
      maxUploadBytes: BIG * 2,
      allowPrivateUrls: false,
      baseUrl: () => 'http://127.0.0.1',
    });
    const { bytes, sha256 } = await hashFile(file);
    const row = await service.prepare({ file: { path: file, bytes, sha256 }, clientId: CLIENT_ID, name: 'big.bin', source: 'upload' });
    const [asset] = await service.insert([row]);
    return { id: asset.id, storedPath: store.localPath!(row.storage_key) };
  } finally {
    await handle.close();
  }
}

const agent = new http.Agent({ keepAlive: true });

/** GETs `url`, discarding the body; resolves with the byte count. */
function download(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers, agent }, (res) => {
        let bytes = 0;
        res.on('data', (c: Buffer) => (bytes += c.length));
        res.on('end', () => (res.statusCode! < 300 ? resolve(bytes) : reject(new Error(`GET ${url}: HTTP ${res.statusCode}`))));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

async function upload(url: string, blob: Blob): Promise<void> {
  const form = new FormData();
  form.append('files', blob, 'upload.bin');
  const res = await fetch(url, { method: 'POST', headers: authHeaders, body: form });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${url}: HTTP ${res.status} ${text.slice(0, 200)}`);
}

/** Runs `transfer` TIMES in a row after `warm`, returning MB/s and the server's RSS growth in MB. */
async function measure(server: Child, bytesEach: number, warm: () => Promise<unknown>, transfer: () => Promise<unknown>) {
  await warm();
  await sleep(200);
  const rss = sampleRss(server.pid);
  const t0 = performance.now();
  for (let i = 0; i < TIMES; i++) await transfer();
  const seconds = (performance.now() - t0) / 1000;
  const { growth } = rss.stop();
  return { mbps: (TIMES * bytesEach) / MB / seconds, growthMb: growth / MB };
}

export default async function assets(): Promise<Row[]> {
  const dir = tempDir();
  const data = freshStore();
  const bigFile = path.join(dir, 'big.bin');
  const upFile = path.join(dir, 'upload.bin');
  const uploadsDir = path.join(dir, 'baseline-uploads');
  fs.mkdirSync(uploadsDir);
  await writeRandomFile(bigFile, BIG);
  await writeRandomFile(upFile, UPLOAD);
  const { id, storedPath } = await placeAsset(data, bigFile);

  const zhinian = await startZhinianServer(data, { ZHINIAN_MAX_UPLOAD_BYTES: String(BIG + 10 * MB) });
  const plain = await startBaseline('http', [storedPath, uploadsDir]);
  try {
    const dl = `${zhinian.url}/api/v1/assets/${id}/download`;
    const check = (n: number) => {
      if (n !== BIG) throw new Error(`downloaded ${n} of ${BIG} bytes`);
    };
    const zDown = await measure(
      zhinian,
      BIG,
      () => download(dl, { ...authHeaders, range: 'bytes=0-1023' }),
      async () => check(await download(dl, authHeaders)),
    );
    const bDown = await measure(
      plain,
      BIG,
      () => download(`${plain.url}/warm`, {}),
      async () => check(await download(`${plain.url}/file`, {})),
    );

    const blob = await fs.openAsBlob(upFile);
    const small = new Blob([new Uint8Array(64 * 1024)]);
    const zUp = await measure(
      zhinian,
      UPLOAD,
      () => upload(`${zhinian.url}/api/v1/assets`, small),
      () => upload(`${zhinian.url}/api/v1/assets`, blob),
    );
    const bUp = await measure(
      plain,
      UPLOAD,
      () => upload(`${plain.url}/upload`, small),
      () => upload(`${plain.url}/upload`, blob),
    );

    return [
      info(`download MB/s (200 MB ×${TIMES}; base: plain http)`, fmt(zDown.mbps, 0), fmt(bDown.mbps, 0), ratioOf(zDown.mbps, bDown.mbps)),
      judged(
        'download: server RSS growth MB',
        fmt(zDown.growthMb),
        fmt(bDown.growthMb),
        ratioOf(zDown.growthMb, bDown.growthMb),
        `≤ ${MAX_RSS_GROWTH_MB} MB`,
        zDown.growthMb <= MAX_RSS_GROWTH_MB,
      ),
      info(`upload MB/s (40 MB multipart ×${TIMES}; base: raw pipe)`, fmt(zUp.mbps, 0), fmt(bUp.mbps, 0), ratioOf(zUp.mbps, bUp.mbps)),
      judged(
        'upload: server RSS growth MB',
        fmt(zUp.growthMb),
        fmt(bUp.growthMb),
        ratioOf(zUp.growthMb, bUp.growthMb),
        `≤ ${MAX_RSS_GROWTH_MB} MB`,
        zUp.growthMb <= MAX_RSS_GROWTH_MB,
      ),
    ];
  } finally {
    agent.destroy();
    await Promise.all([zhinian.stop(), plain.stop()]);
  }
}
