import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import { startS3Server, type S3Server } from '../s3-server.ts';
import { tempDir } from '../helpers.ts';
import { createLocalStore } from '../../src/assets/store-local.ts';
import { createS3Store } from '../../src/assets/store-s3.ts';
import type { Store } from '../../src/assets/store.ts';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** A forced collection, so RSS figures measure what is live rather than what is uncollected. */
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** Runs `fn` while sampling RSS every 10 ms; answers the peak growth over the start, in MB. */
async function peakRssGrowthMb(fn: () => Promise<void>): Promise<number> {
  gc();
  const start = process.memoryUsage.rss();
  let peak = start;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 10);
  try {
    await fn();
  } finally {
    clearInterval(timer);
  }
  peak = Math.max(peak, process.memoryUsage.rss());
  return (peak - start) / 1e6;
}

interface Backend {
  name: string;
  /** A store ready to use, and one whose check() must fail (its root or bucket is missing). */
  setup(): Promise<{ store: Store; broken: () => Promise<Store>; close(): Promise<void> }>;
}

const backends: Backend[] = [
  {
    name: 'local disk',
    async setup() {
      const root = tempDir('zhinian-store-');
      return {
        store: createLocalStore(root),
        async broken() {
          const gone = tempDir('zhinian-store-gone-');
          const store = createLocalStore(gone);
          fs.rmSync(gone, { recursive: true });
          return store;
        },
        close: async () => fs.rmSync(root, { recursive: true, force: true }),
      };
    },
  },
  {
    name: 's3 (s3rver on loopback)',
    async setup() {
      const server: S3Server = await startS3Server();
      return {
        store: await createS3Store({ ...server.options, presign: true }),
        broken: () => createS3Store({ ...server.options, bucket: 'no-such-bucket' }),
        close: () => server.close(),
      };
    },
  },
];

for (const backend of backends) {
  describe(`store conformance: ${backend.name}`, () => {
    let store: Store;
    let broken: () => Promise<Store>;
    let close: () => Promise<void>;
    let scratch: string;
    /** A file in the scratch dir, as the asset service hands over its temp files. */
    const fileWith = (body: Buffer) => {
      const file = path.join(scratch, `${Date.now()}-${randomBytes(4).toString('hex')}`);
      fs.writeFileSync(file, body);
      return file;
    };

    before(async () => {
      ({ store, broken, close } = await backend.setup());
      scratch = tempDir('zhinian-store-scratch-');
    });
    after(async () => {
      await close();
      fs.rmSync(scratch, { recursive: true, force: true });
    });

    test('putFile stores the bytes, removes the source file, and get returns them unchanged', async () => {
      const body = randomBytes(300_000);
      const file = fileWith(body);
      await store.putFile('ab/asset_roundtrip', file);
      assert.equal(fs.existsSync(file), false, 'the source file is gone');
      const back = await readAll(await store.get('ab/asset_roundtrip'));
      assert.equal(back.length, body.length);
      assert.equal(sha256(back), sha256(body));
    });

    test('get with a range returns exactly the inclusive bytes: first, middle, last byte, suffix', async () => {
      const body = randomBytes(10_000);
      await store.putFile('cd/asset_ranges', fileWith(body));
      const ranges = [
        { start: 0, end: 0 },
        { start: 0, end: 99 },
        { start: 4_000, end: 5_999 },
        { start: 9_999, end: 9_999 },
        { start: 10_000 - 500, end: 9_999 }, // what `Range: bytes=-500` resolves to
      ];
      for (const range of ranges) {
        const got = await readAll(await store.get('cd/asset_ranges', range));
        assert.deepEqual(got, body.subarray(range.start, range.end + 1), `bytes ${range.start}-${range.end}`);
      }
    });

    test('stat gives the size of a present object and null for a missing one', async () => {
      await store.putFile('ef/asset_stat', fileWith(Buffer.from('twelve bytes')));
      assert.deepEqual(await store.stat('ef/asset_stat'), { bytes: 12 });
      assert.equal(await store.stat('ef/asset_missing'), null);
    });

    test('get of a missing key rejects', async () => {
      await assert.rejects(store.get('ef/asset_never_stored'));
    });

    test('delete removes the object, and deleting it again succeeds', async () => {
      await store.putFile('gh/asset_delete', fileWith(Buffer.from('short-lived')));
      await store.delete('gh/asset_delete');
      assert.equal(await store.stat('gh/asset_delete'), null);
      await assert.rejects(store.get('gh/asset_delete'));
      await store.delete('gh/asset_delete');
    });

    test('putFile replaces an object stored under the same key', async () => {
      await store.putFile('ij/asset_twice', fileWith(Buffer.from('first version')));
      await store.putFile('ij/asset_twice', fileWith(Buffer.from('second')));
      assert.equal((await readAll(await store.get('ij/asset_twice'))).toString(), 'second');
    });

    test('a 60 MB file is streamed in and out without holding it in memory', async (t) => {
      const bytes = 60 * 1024 * 1024;
      const file = path.join(scratch, 'large');
      const hash = createHash('sha256');
      const fd = fs.openSync(file, 'w');
      for (let written = 0; written < bytes; written += 1024 * 1024) {
        const chunk = randomBytes(1024 * 1024); // random: nothing on the way can compress it
        hash.update(chunk);
        fs.writeSync(fd, chunk);
      }
      fs.closeSync(fd);
      const expected = hash.digest('hex');

      const putMb = await peakRssGrowthMb(() => store.putFile('kl/asset_large', file));
      assert.deepEqual(await store.stat('kl/asset_large'), { bytes });
      let got = '';
      let received = 0;
      const getMb = await peakRssGrowthMb(async () => {
        const h = createHash('sha256');
        for await (const chunk of await store.get('kl/asset_large')) {
          h.update(chunk as Buffer);
          received += (chunk as Buffer).length;
        }
        got = h.digest('hex');
      });
      t.diagnostic(`${backend.name}: RSS growth putting 60 MB ${putMb.toFixed(1)} MB, getting it ${getMb.toFixed(1)} MB`);
      assert.equal(received, bytes);
      assert.equal(got, expected);
      assert.ok(putMb < 40, `putFile grew RSS by ${putMb.toFixed(1)} MB`);
      assert.ok(getMb < 40, `get grew RSS by ${getMb.toFixed(1)} MB`);
      await store.delete('kl/asset_large');
    });

    test('check passes on a usable store and rejects when the root or bucket is missing', async () => {
      await store.check();
      await assert.rejects((await broken()).check());
    });

    test('presignGet, when offered, gives a URL serving the bytes and download headers without credentials', async (t) => {
      if (!store.presignGet) return t.skip(`${backend.name} streams downloads itself`);
      const body = randomBytes(5_000);
      await store.putFile('mn/asset_presigned', fileWith(body));
      const url = await store.presignGet('mn/asset_presigned', { expiresInSeconds: 60, fileName: 'photo 1.png', contentType: 'image/png' });
      const res = await fetch(url);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'image/png');
      assert.equal(res.headers.get('content-disposition'), 'attachment; filename="photo 1.png"');
      assert.equal(sha256(Buffer.from(await res.arrayBuffer())), sha256(body));
      const ranged = await fetch(url, { headers: { range: 'bytes=4990-4999' } });
      assert.equal(ranged.status, 206);
      assert.deepEqual(Buffer.from(await ranged.arrayBuffer()), body.subarray(-10));
      // Tampering is not tested: s3rver checks only the access key of SigV4 requests, not the signature.
      assert.match(new URL(url).searchParams.get('X-Amz-Expires') ?? '', /^60$/);
    });
  });
}
