// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { KEY_A, KEY_B, startFileServer, startStack, type Stack } from './helpers.ts';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface UploadFile {
  name: string;
  body: Buffer;
  type: string;
}

async function upload(stack: Stack, files: UploadFile[], key = KEY_A) {
  const form = new FormData();
  for (const f of files) form.append('files', new Blob([new Uint8Array(f.body)], { type: f.type }), f.name);
  return stack.api('/api/v1/assets', { method: 'POST', body: form, key });
}

/** A PNG of random pixels: it does not compress, so it is a few KB, enough for ranges. */
async function noisePng(width: number, height: number): Promise<Buffer> {
  return sharp(randomBytes(width * height * 3), { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}

async function download(stack: Stack, id: string, headers: Record<string, string> = {}, key = KEY_A) {
  const res = await fetch(`${stack.url}/api/v1/assets/${id}/download`, { headers: { authorization: `Bearer ${key}`, ...headers } });
  return { res, bytes: Buffer.from(await res.arrayBuffer()) };
}

async function listAll(stack: Stack, path: string, key = KEY_A): Promise<any[]> {
  const res = await stack.api(path, { key });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.assets;
}

function assertFieldError(res: { status: number; body: any }, status: number, field: string) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(typeof res.body?.error, 'string', JSON.stringify(res.body));
  assert.ok(res.body.error.includes(field), `error should name ${field}: ${res.body.error}`);
}

describe('assets: upload, register by URL, download, list', () => {
  let stack: Stack;
  let files: Awaited<ReturnType<typeof startFileServer>>;
  let png: Buffer;
  let jpeg: Buffer;
  const text = Buffer.from('plain text, not an image\n'.repeat(20));

  before(async () => {
    stack = await startStack({ worker: false });
    png = await noisePng(40, 30);
    jpeg = await sharp({ create: { width: 120, height: 80, channels: 3, background: { r: 10, g: 200, b: 90 } } })
      .jpeg()
      .toBuffer();
    files = await startFileServer({
      '/ref.png': { body: png, type: 'image/png' },
      '/notes.txt': { body: text, type: 'text/plain' },
    });
  });
  after(async () => {
    await stack.stop();
    await files.close();
  });

  describe('multipart upload', () => {
    test('one file answers 201 { assets } with kind, type, size, sha256, dimensions, source and downloadUrl', async () => {
      const res = await upload(stack, [{ name: 'reference.png', body: png, type: 'image/png' }]);
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.equal(res.body.assets.length, 1);
      const a = res.body.assets[0];
      assert.match(a.id, /^asset_/);
      assert.equal(a.kind, 'image');
      assert.equal(a.name, 'reference.png');
      assert.equal(a.mimeType, 'image/png');
      assert.equal(a.bytes, png.length);
      assert.equal(a.sha256, sha256(png));
      assert.equal(a.width, 40);
      assert.equal(a.height, 30);
      assert.equal(a.source, 'upload');
      assert.equal(a.sourceUrl, null);
      assert.equal(a.jobId, null);
      assert.equal(typeof a.downloadUrl, 'string');
      assert.ok(a.downloadUrl.endsWith(`/api/v1/assets/${a.id}/download`), a.downloadUrl);

      const again = await stack.api(`/api/v1/assets/${a.id}`);
      assert.equal(again.status, 200);
      assert.deepEqual(again.body.asset, a);
    });

    test('three files in one request answer 201 with three assets, each described', async () => {
      const res = await upload(stack, [
        { name: 'one.png', body: png, type: 'image/png' },
        { name: 'two.jpg', body: jpeg, type: 'image/jpeg' },
        { name: 'three.txt', body: text, type: 'text/plain' },
      ]);
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.equal(res.body.assets.length, 3);
      const byName = Object.fromEntries(res.body.assets.map((a: any) => [a.name, a]));
      assert.deepEqual(Object.keys(byName).sort(), ['one.png', 'three.txt', 'two.jpg']);
      assert.equal(new Set(res.body.assets.map((a: any) => a.id)).size, 3);

      assert.equal(byName['one.png'].kind, 'image');
      assert.equal(byName['one.png'].sha256, sha256(png));
      assert.equal(byName['one.png'].bytes, png.length);

      assert.equal(byName['two.jpg'].kind, 'image');
      assert.equal(byName['two.jpg'].mimeType, 'image/jpeg');
      assert.equal(byName['two.jpg'].bytes, jpeg.length);
      assert.equal(byName['two.jpg'].sha256, sha256(jpeg));
      assert.equal(byName['two.jpg'].width, 120);
      assert.equal(byName['two.jpg'].height, 80);

      assert.equal(byName['three.txt'].kind, 'file');
      assert.equal(byName['three.txt'].sha256, sha256(text));
      for (const a of res.body.assets) assert.equal(a.source, 'upload');
    });

    test('a text file is stored with kind "file" and no dimensions', async () => {
      const res = await upload(stack, [{ name: 'readme.txt', body: text, type: 'text/plain' }]);
      assert.equal(res.status, 201, JSON.stringify(res.body));
      const a = res.body.assets[0];
      assert.equal(a.kind, 'file');
      assert.equal(a.bytes, text.length);
      assert.equal(a.sha256, sha256(text));
      assert.equal(a.width, null);
      assert.equal(a.height, null);
      assert.equal(typeof a.mimeType, 'string');
    });

    test('multipart with no file answers 400 naming files', async () => {
      const form = new FormData();
      form.append('note', 'no file here');
      const res = await stack.api('/api/v1/assets', { method: 'POST', body: form });
      assertFieldError(res, 400, 'files');
    });
  });

  describe('register by URL', () => {
    test('a JSON { url, name, kind } answers 201 { asset } fetched from the URL', async () => {
      const url = `${files.base}/ref.png`;
      const res = await stack.api('/api/v1/assets', { method: 'POST', json: { url, name: 'reference.png', kind: 'image' } });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      const a = res.body.asset;
      assert.match(a.id, /^asset_/);
      assert.equal(a.source, 'url');
      assert.equal(a.sourceUrl, url);
      assert.equal(a.name, 'reference.png');
      assert.equal(a.kind, 'image');
      assert.equal(a.mimeType, 'image/png');
      assert.equal(a.bytes, png.length);
      assert.equal(a.sha256, sha256(png));
      assert.equal(a.width, 40);
      assert.equal(a.height, 30);
      const { res: dl, bytes } = await download(stack, a.id);
      assert.equal(dl.status, 200);
      assert.ok(bytes.equals(png));
    });

    test('a URL answering 404 gives 400 naming url', async () => {
      const res = await stack.api('/api/v1/assets', { method: 'POST', json: { url: `${files.base}/missing.png` } });
      assertFieldError(res, 400, 'url');
    });

    test('kind "image" for a text file answers 400', async () => {
      const before = await listAll(stack, '/api/v1/assets?limit=200');
      const res = await stack.api('/api/v1/assets', { method: 'POST', json: { url: `${files.base}/notes.txt`, kind: 'image' } });
      assertFieldError(res, 400, 'kind');
      const afterList = await listAll(stack, '/api/v1/assets?limit=200');
      assert.equal(afterList.length, before.length);
    });
  });

  describe('download', () => {
    let photo: Buffer;
    let asset: any;

    before(async () => {
      photo = await noisePng(64, 48);
      const res = await upload(stack, [{ name: 'photo.png', body: photo, type: 'image/png' }]);
      assert.equal(res.status, 201);
      asset = res.body.assets[0];
      assert.ok(photo.length > 300, `test image is only ${photo.length} bytes`);
    });

    test('download answers 200 with the exact bytes, Content-Type, Content-Length, ETag and Content-Disposition', async () => {
      const { res, bytes } = await download(stack, asset.id);
      assert.equal(res.status, 200);
      assert.ok(bytes.equals(photo));
      assert.equal(res.headers.get('content-type'), 'image/png');
      assert.equal(res.headers.get('content-length'), String(photo.length));
      assert.ok(res.headers.get('etag'), 'ETag');
      assert.match(res.headers.get('content-disposition') ?? '', /photo\.png/);
    });

    test('a non-ASCII file name is kept and sent as filename* in Content-Disposition', async () => {
      const name = '参考图.png';
      const up = await upload(stack, [{ name, body: png, type: 'image/png' }]);
      assert.equal(up.status, 201);
      assert.equal(up.body.assets[0].name, name);
      const { res } = await download(stack, up.body.assets[0].id);
      assert.equal(res.status, 200);
      const cd = res.headers.get('content-disposition') ?? '';
      assert.match(cd, /filename\*=UTF-8''/i);
      assert.ok(cd.includes(encodeURIComponent(name)), cd);
    });

    test('download with Range bytes=0-99 answers 206 with Content-Range and 100 bytes', async () => {
      const { res, bytes } = await download(stack, asset.id, { range: 'bytes=0-99' });
      assert.equal(res.status, 206);
      assert.equal(res.headers.get('content-range'), `bytes 0-99/${photo.length}`);
      assert.equal(res.headers.get('content-length'), '100');
      assert.equal(bytes.length, 100);
      assert.ok(bytes.equals(photo.subarray(0, 100)));
    });

    test('a suffix range bytes=-10 answers the last 10 bytes', async () => {
      const { res, bytes } = await download(stack, asset.id, { range: 'bytes=-10' });
      assert.equal(res.status, 206);
      assert.equal(res.headers.get('content-range'), `bytes ${photo.length - 10}-${photo.length - 1}/${photo.length}`);
      assert.ok(bytes.equals(photo.subarray(photo.length - 10)));
    });

    test('an open range bytes=100- answers from byte 100 to the end', async () => {
      const { res, bytes } = await download(stack, asset.id, { range: 'bytes=100-' });
      assert.equal(res.status, 206);
      assert.equal(res.headers.get('content-range'), `bytes 100-${photo.length - 1}/${photo.length}`);
      assert.equal(res.headers.get('content-length'), String(photo.length - 100));
      assert.ok(bytes.equals(photo.subarray(100)));
    });

    test('an unsatisfiable range answers 416 with Content-Range: bytes */size', async () => {
      const { res } = await download(stack, asset.id, { range: `bytes=${photo.length}-` });
      assert.equal(res.status, 416);
      assert.equal(res.headers.get('content-range'), `bytes */${photo.length}`);
    });

    test('If-None-Match with the ETag answers 304 without a body', async () => {
      const first = await download(stack, asset.id);
      const etag = first.res.headers.get('etag')!;
      const { res, bytes } = await download(stack, asset.id, { 'if-none-match': etag });
      assert.equal(res.status, 304);
      assert.equal(bytes.length, 0);
      const other = await download(stack, asset.id, { 'if-none-match': '"something-else"' });
      assert.equal(other.res.status, 200);
    });

    test('If-None-Match with *, a weak validator or a list holding the ETag answers 304 (RFC 9110 §13.1.2)', async () => {
      const etag = (await download(stack, asset.id)).res.headers.get('etag')!;
      for (const header of ['*', `W/${etag}`, `"a", ${etag}`, `"a",W/${etag}, "b"`]) {
        const { res, bytes } = await download(stack, asset.id, { 'if-none-match': header });
        assert.equal(res.status, 304, header);
        assert.equal(bytes.length, 0);
        assert.equal(res.headers.get('etag'), etag);
      }
      assert.equal((await download(stack, asset.id, { 'if-none-match': '"a", W/"b"' })).res.status, 200);
    });

    test('an invalid Range is ignored and the whole file sent (200); a valid one with no byte in the file is 416', async () => {
      for (const range of ['bytes=5-2', 'bytes=abc', 'items=0-1', 'bytes=0-1,3-4', 'bytes=--1', 'bytes 0-1']) {
        const { res, bytes } = await download(stack, asset.id, { range });
        assert.equal(res.status, 200, range);
        assert.ok(bytes.equals(photo), range);
      }
      assert.equal((await download(stack, asset.id, { range: 'BYTES=0-9' })).res.status, 206, 'the unit is case-insensitive');
    });

    test('every download answer carries X-Content-Type-Options: nosniff', async () => {
      const etag = (await download(stack, asset.id)).res.headers.get('etag')!;
      for (const headers of [{} as Record<string, string>, { range: 'bytes=0-9' }, { range: `bytes=${photo.length}-` }, { 'if-none-match': etag }]) {
        const { res } = await download(stack, asset.id, headers);
        assert.equal(res.headers.get('x-content-type-options'), 'nosniff', JSON.stringify(headers));
      }
      const missing = await stack.api('/api/v1/assets/asset_00000000000000000000000000/download');
      assert.equal(missing.status, 404);
      assert.equal(missing.headers.get('x-content-type-options'), 'nosniff');
    });

    test('file names lose controls and bidi overrides, and are cut between code points', async () => {
      const cases: [string, (name: string) => void][] = [
        ['evil\u202Egnp.exe', (n) => assert.equal(n, 'evilgnp.exe')],
        ['a\u0085b\u200Fc\u2066d\u0007.png', (n) => assert.equal(n, 'abcd.png')],
        [
          `${'x'.repeat(254)}\u{1F600}tail.png`,
          (n) => {
            assert.equal(n, 'x'.repeat(254), 'the emoji does not fit whole, so it is left out, not split');
          },
        ],
        [`${'名'.repeat(300)}.png`, (n) => assert.equal(n, '名'.repeat(255))],
      ];
      for (const [name, check] of cases) {
        const up = await upload(stack, [{ name, body: png, type: 'image/png' }]);
        assert.equal(up.status, 201, JSON.stringify(up.body));
        const stored: string = up.body.assets[0].name;
        assert.ok(stored.length <= 255);
        assert.ok((stored as string & { isWellFormed(): boolean }).isWellFormed(), 'no broken surrogate');
        check(stored);
        const { res } = await download(stack, up.body.assets[0].id);
        assert.equal(res.status, 200);
        assert.ok(res.headers.get('content-disposition'));
      }
    });
  });

  describe('list', () => {
    test('kind filters the list', async () => {
      const images = await listAll(stack, '/api/v1/assets?kind=image&limit=200');
      const fileKind = await listAll(stack, '/api/v1/assets?kind=file&limit=200');
      assert.ok(images.length > 0);
      assert.ok(fileKind.length > 0);
      assert.ok(images.every((a) => a.kind === 'image'));
      assert.ok(fileKind.every((a) => a.kind === 'file'));
      const all = await listAll(stack, '/api/v1/assets?limit=200');
      assert.equal(all.filter((a) => a.kind === 'image').length, images.length);
      assert.equal(all.filter((a) => a.kind === 'file').length, fileKind.length);
    });

    test('limit caps the page and gives a nextBefore', async () => {
      const res = await stack.api('/api/v1/assets?limit=2');
      assert.equal(res.status, 200);
      assert.equal(res.body.assets.length, 2);
      assert.equal(typeof res.body.nextBefore, 'string');
    });

    test('paging with before/nextBefore over 25 assets returns each exactly once, newest first', async () => {
      // Client B has no other assets here; batches of several files share milliseconds.
      const uploaded: string[] = [];
      for (const batch of [10, 10, 5]) {
        const res = await upload(
          stack,
          Array.from({ length: batch }, (_, i) => ({ name: `page-${uploaded.length + i}.txt`, body: Buffer.from(`file ${uploaded.length + i}`), type: 'text/plain' })),
          KEY_B,
        );
        assert.equal(res.status, 201, JSON.stringify(res.body));
        uploaded.push(...res.body.assets.map((a: any) => a.id));
      }
      const seen: any[] = [];
      let before: string | null = null;
      const pageSizes: number[] = [];
      for (let i = 0; i < 10; i++) {
        const q: string = before === null ? '' : `&before=${encodeURIComponent(before)}`;
        const res = await stack.api(`/api/v1/assets?limit=10${q}`, { key: KEY_B });
        assert.equal(res.status, 200, JSON.stringify(res.body));
        seen.push(...res.body.assets);
        pageSizes.push(res.body.assets.length);
        before = res.body.nextBefore;
        if (before === null) break;
      }
      assert.equal(before, null, 'last page has nextBefore null');
      assert.deepEqual(pageSizes, [10, 10, 5]);
      const ids = seen.map((a) => a.id);
      assert.equal(new Set(ids).size, ids.length, 'no asset twice');
      assert.deepEqual([...ids].sort(), [...uploaded].sort());
      for (let i = 1; i < seen.length; i++) assert.ok(seen[i - 1].createdAt >= seen[i].createdAt, 'newest first');
      // Batches were made one after another: every asset of a later batch comes first.
      assert.deepEqual(new Set(ids.slice(0, 5)), new Set(uploaded.slice(20)));
    });

    for (const [query, param] of [
      ['limit=0', 'limit'],
      ['limit=201', 'limit'],
      ['kind=bogus', 'kind'],
      ['before=notatime', 'before'],
    ]) {
      test(`list with ${query} answers 400 naming ${param}`, async () => {
        const res = await stack.api(`/api/v1/assets?${query}`);
        assertFieldError(res, 400, param);
      });
    }
  });
});

describe('assets: size limit', () => {
  let stack: Stack;
  let files: Awaited<ReturnType<typeof startFileServer>>;
  const big = randomBytes(150_000);

  before(async () => {
    stack = await startStack({ worker: false, env: { ZHINIAN_MAX_UPLOAD_BYTES: '100000' } });
    files = await startFileServer({ '/big.bin': { body: big, type: 'application/octet-stream' } });
  });
  after(async () => {
    await stack.stop();
    await files.close();
  });

  test('an upload over ZHINIAN_MAX_UPLOAD_BYTES answers 413 and stores nothing', async () => {
    const res = await upload(stack, [{ name: 'big.bin', body: big, type: 'application/octet-stream' }]);
    assert.equal(res.status, 413, JSON.stringify(res.body));
    assert.equal(typeof res.body?.error, 'string');
    assert.deepEqual(await listAll(stack, '/api/v1/assets'), []);
  });

  test('a small file next to a too-large one in the same request is not stored either', async () => {
    const res = await upload(stack, [
      { name: 'small.txt', body: Buffer.from('small'), type: 'text/plain' },
      { name: 'big.bin', body: big, type: 'application/octet-stream' },
    ]);
    assert.equal(res.status, 413, JSON.stringify(res.body));
    assert.deepEqual(await listAll(stack, '/api/v1/assets'), []);
  });

  test('registering a URL whose file is over the limit answers 413 and stores nothing', async () => {
    const res = await stack.api('/api/v1/assets', { method: 'POST', json: { url: `${files.base}/big.bin` } });
    assert.equal(res.status, 413, JSON.stringify(res.body));
    assert.equal(typeof res.body?.error, 'string');
    assert.deepEqual(await listAll(stack, '/api/v1/assets'), []);
  });

  test('a file just under the limit is accepted', async () => {
    const res = await upload(stack, [{ name: 'ok.bin', body: big.subarray(0, 100_000), type: 'application/octet-stream' }]);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(res.body.assets[0].bytes, 100_000);
  });
});

describe('assets and jobs with private URLs refused', () => {
  let stack: Stack;
  let hits = 0;
  let server: http.Server;
  let base: string;

  before(async () => {
    stack = await startStack({ worker: false, env: { ZHINIAN_ALLOW_PRIVATE_URLS: 'false' } });
    const png = await noisePng(8, 8);
    // Counts requests: a refused URL must never be contacted.
    server = http.createServer((_req, res) => {
      hits++;
      res.setHeader('content-type', 'image/png');
      res.end(png);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await stack.stop();
    await new Promise<void>((r) => server.close(() => r()));
  });

  const privateUrls = () => [`${base}/ref.png`, 'http://localhost/', 'http://169.254.169.254/latest/meta-data', 'http://[::1]/', 'http://2130706433/'];

  test('registering loopback, localhost, link-local, IPv6 loopback and decimal-IP URLs answers 400 naming url', async () => {
    for (const url of privateUrls()) {
      const res = await stack.api('/api/v1/assets', { method: 'POST', json: { url, kind: 'image' } });
      assertFieldError(res, 400, 'url');
    }
    assert.equal(hits, 0, 'the loopback server was contacted');
    assert.deepEqual(await listAll(stack, '/api/v1/assets'), []);
  });

  test('a job with a private imageUrls entry answers 400 naming imageUrls', async () => {
    for (const url of privateUrls()) {
      const res = await stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.upscale', imageUrls: [url] } });
      assertFieldError(res, 400, 'imageUrls');
    }
  });

  test('a job with a private webhookUrl answers 400 naming webhookUrl', async () => {
    for (const url of privateUrls()) {
      const res = await stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'x', webhookUrl: url } });
      assertFieldError(res, 400, 'webhookUrl');
    }
  });

  test('a job with a private inputUrls or materials url answers 400 naming the field', async () => {
    const url = 'http://169.254.169.254/latest/meta-data';
    const inputs = await stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.upscale', inputUrls: [url] } });
    assertFieldError(inputs, 400, 'inputUrls');
    const materials = await stack.api('/api/v1/jobs', {
      method: 'POST',
      json: { capability: 'video.generate', prompt: 'x', materials: [{ type: 'image', url }] },
    });
    assertFieldError(materials, 400, 'materials');
    const jobs = await stack.api('/api/v1/jobs');
    assert.deepEqual(jobs.body.jobs, []);
  });
});
