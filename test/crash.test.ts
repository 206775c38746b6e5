// @backends sqlite,postgres
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import type { DbHandle } from '../src/db/index.ts';
import { callApi, cleanup, ffmpegProcessesWith, KEY_A, killAndWait, listeningUrl, spawnZhinian, startReceiver, tempDir, testEnv, waitFor, openTestDb } from './helpers.ts';

/**
 * SIGKILL of real processes at awkward moments: nothing queued, produced or announced is lost,
 * and nothing is produced or announced twice.
 */

const TERMINAL = ['succeeded', 'failed', 'expired', 'cancelled'];

const api =
  (base: string) =>
  (p: string, init: Parameters<typeof callApi>[2] = {}) =>
    callApi(base, p, init);

async function getJob(base: string, id: string): Promise<any> {
  const res = await callApi(base, `/api/v1/jobs/${id}`);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.job;
}

describe('crashes', () => {
  test('a worker SIGKILLed mid-video loses nothing: another worker finishes the job, with one output', async (t) => {
    const add = cleanup(t);
    const dataDir = tempDir();
    const env = testEnv(dataDir, { ZHINIAN_JOB_LEASE_SECONDS: '2' });
    const server = add(spawnZhinian('server', env), (c) => killAndWait(c));
    const base = await listeningUrl(server);
    const h: DbHandle = add(await openTestDb(dataDir), (x) => x.close());
    const first = add(spawnZhinian('worker', env), (c) => killAndWait(c));

    const created = await api(base)('/api/v1/jobs', {
      method: 'POST',
      json: { capability: 'video.generate', prompt: '生成一条品牌短视频', settings: { ratio: '16:9', duration: 5, resolution: '1080p' } },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.job.id;
    await waitFor(
      async () => {
        const job = await getJob(base, id);
        return job.status === 'running' && job.progress > 10;
      },
      { timeoutMs: 30_000, what: `the video to be encoding (${first.output()})` },
    );
    const before = await h.db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    assert.equal(before.attempts, 1);
    assert.ok(before.lease_owner);

    // The replacement boots while the first still works (boot time stays off the clock) and
    // can only take the job over once the dead worker's lease lapses.
    const second = add(spawnZhinian('worker', { ...env, LOG_LEVEL: 'info' }), (c) => killAndWait(c));
    await waitFor(() => second.output().includes('worker started'), { timeoutMs: 30_000, what: 'the second worker to start' });
    assert.equal((await h.db.selectFrom('jobs').select('lease_owner').where('id', '=', id).executeTakeFirstOrThrow()).lease_owner, before.lease_owner);

    await killAndWait(first, 'SIGKILL');
    const killedAt = Date.now();
    const orphans = ffmpegProcessesWith(path.join(dataDir, 'tmp', 'work'));
    // The killed worker's ffmpeg loses its progress pipe and should not outlive it for long.
    void waitFor(() => ffmpegProcessesWith(path.join(dataDir, 'tmp', 'work')).every((pid) => !orphans.includes(pid)), { timeoutMs: 30_000 }).then(
      () => t.diagnostic(`${orphans.length} ffmpeg process(es) of the killed worker exited ${Date.now() - killedAt} ms after it`),
      () => {},
    );

    const job = await waitFor(
      async () => {
        const j = await getJob(base, id);
        return TERMINAL.includes(j.status) ? j : null;
      },
      { timeoutMs: 50_000, intervalMs: 100, what: 'the job to finish on the second worker' },
    );
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    assert.equal(job.outputAssetIds.length, 1);
    const row = await h.db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    assert.equal(row.attempts, 2);

    const listed = await api(base)('/api/v1/assets?limit=200');
    assert.equal(listed.status, 200);
    const outputs = listed.body.assets.filter((a: any) => a.jobId === id);
    assert.equal(outputs.length, 1, 'exactly one output asset');
    assert.equal(outputs[0].id, job.outputAssetIds[0]);
    assert.equal(outputs[0].kind, 'video');
    const download = await fetch(`${base}/api/v1/assets/${outputs[0].id}/download`, { headers: { authorization: `Bearer ${KEY_A}` } });
    assert.equal(download.status, 200);
    assert.equal((await download.arrayBuffer()).byteLength, outputs[0].bytes, 'the stored file is complete');
    assert.equal((await h.db.selectFrom('assets').select('id').where('job_id', '=', id).execute()).length, 1);

    const leftovers = fs.existsSync(path.join(dataDir, 'tmp', 'work')) ? fs.readdirSync(path.join(dataDir, 'tmp', 'work')) : [];
    t.diagnostic(`work dirs left on disk after the crash: ${leftovers.length}`);
  });

  test('npm start SIGKILLed with jobs in flight: after a restart every job succeeds and each webhook arrives once', async (t) => {
    const add = cleanup(t);
    const dataDir = tempDir();
    const receiver = add(await startReceiver(), (r) => r.close());
    const env = testEnv(dataDir, { ZHINIAN_JOB_LEASE_SECONDS: '2' });
    const first = add(spawnZhinian('start', env), (c) => killAndWait(c));
    const firstUrl = await listeningUrl(first);

    const ids: string[] = [];
    const created = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        api(firstUrl)('/api/v1/jobs', {
          method: 'POST',
          json: { capability: 'image.generate', prompt: `产品主图 ${i}`, width: 1536, height: 1536, webhookUrl: receiver.url },
        }),
      ),
    );
    for (const res of created) {
      assert.equal(res.status, 201, JSON.stringify(res.body));
      ids.push(res.body.job.id);
    }
    // Kill while work is under way: some jobs done and announced, some running, some queued.
    // The process is frozen (SIGSTOP) to look at it, and killed only at a moment when no webhook
    // is in flight: a POST the receiver answered but the dead process never recorded cannot be
    // told apart from a lost one, so at-least-once (same X-Zhinian-Delivery) is all any sender
    // can promise for that instant. Every other moment must give exactly once.
    const h: DbHandle = add(await openTestDb(dataDir), (x) => x.close());
    await waitFor(
      async () => {
        if (receiver.hooks.length < 2) return false;
        first.kill('SIGSTOP');
        const inFlight = await h.db.selectFrom('webhook_deliveries').select('id').where('status', '=', 'pending').where('lease_owner', 'is not', null).execute();
        const running = await h.db.selectFrom('jobs').select('id').where('status', '=', 'running').execute();
        if (inFlight.length === 0 && running.length > 0) return true;
        first.kill('SIGCONT');
        return false;
      },
      { timeoutMs: 30_000, intervalMs: 20, what: 'a moment with jobs running and no webhook in flight' },
    );
    await killAndWait(first, 'SIGKILL');
    const atKill = await h.db.selectFrom('jobs').select(['status']).execute();
    const byStatus = atKill.reduce<Record<string, number>>((acc, r) => ({ ...acc, [r.status]: (acc[r.status] ?? 0) + 1 }), {});
    t.diagnostic(`at the kill: ${JSON.stringify(byStatus)}, ${receiver.hooks.length} webhooks received`);
    assert.equal(atKill.length, 20);
    assert.ok((byStatus.succeeded ?? 0) < 20, 'the kill came while jobs were still in flight');

    const second = add(spawnZhinian('start', env), (c) => killAndWait(c));
    const secondUrl = await listeningUrl(second);
    const jobs = await waitFor(
      async () => {
        const res = await api(secondUrl)('/api/v1/jobs?limit=200');
        return res.body.jobs.every((j: any) => TERMINAL.includes(j.status)) ? (res.body.jobs as any[]) : null;
      },
      { timeoutMs: 40_000, intervalMs: 100, what: 'all jobs to finish after the restart' },
    );
    assert.equal(jobs.length, 20, 'no job lost or duplicated');
    assert.deepEqual(jobs.map((j) => j.id).sort(), [...ids].sort());
    for (const job of jobs) {
      assert.equal(job.status, 'succeeded', `${job.id}: ${JSON.stringify(job.error)}`);
      assert.equal(job.outputAssetIds.length, 1);
      const asset = await api(secondUrl)(`/api/v1/assets/${job.outputAssetIds[0]}`);
      assert.equal(asset.status, 200, `${job.id}'s output asset exists`);
    }
    const outputRows = await h.db.selectFrom('assets').select(['job_id']).where('source', '=', 'output').execute();
    assert.equal(outputRows.length, 20, 'one output asset per job, none orphaned in the table');

    // Every delivery is recorded as delivered, then the receiver's log is checked for holes and repeats.
    let deliveries: any[] = [];
    await waitFor(
      async () => {
        deliveries = await h.db.selectFrom('webhook_deliveries').selectAll().execute();
        return deliveries.length === 20 && deliveries.every((r) => r.status === 'delivered');
      },
      { timeoutMs: 40_000, intervalMs: 100, what: 'all 20 deliveries to be delivered' },
    ).catch((error) => {
      const stuck = deliveries.filter((r) => r.status !== 'delivered').map(({ payload, ...r }) => ({ ...r, dueInMs: r.next_attempt_at - Date.now() }));
      throw new Error(`${error.message}: ${deliveries.length} rows, not delivered: ${JSON.stringify(stuck)}`);
    });
    const perJob = new Map<string, number>();
    for (const hook of receiver.hooks) {
      assert.equal(hook.body.event, 'generation.succeeded');
      perJob.set(hook.body.job.id, (perJob.get(hook.body.job.id) ?? 0) + 1);
    }
    assert.deepEqual([...perJob.keys()].sort(), [...ids].sort(), 'a webhook for every job');
    assert.deepEqual(
      [...perJob].filter(([, n]) => n !== 1),
      [],
      'no webhook delivered twice',
    );
    for (const job of jobs) {
      const hook = receiver.hooks.find((x) => x.body.job.id === job.id)!;
      assert.deepEqual(hook.body.job.outputAssetIds, job.outputAssetIds);
    }
  });
});
