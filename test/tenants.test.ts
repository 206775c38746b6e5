// @backends sqlite,postgres
// Tenants stay apart: client ids are never reused or imitated, console keys stay manageable when
// their id turns up in the env, every console client signs its webhooks with its own secret from
// the first delivery, and nothing of an env key is shown.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { consoleSignIn } from './console-helpers.ts';
import { KEY_A, openTestDb, startReceiver, startStack, tempDir, waitFor, WEBHOOK_SECRET, type Stack } from './helpers.ts';

/** An admin session whose calls take the JSON body as their third argument. */
async function signIn(stack: Stack) {
  const call = await consoleSignIn(stack);
  return (method: string, p: string, json?: unknown) => call(method, p, json === undefined ? {} : { json });
}

const hmacHex = (secret: string, data: string) => createHmac('sha256', secret).update(data).digest('hex');

describe('tenants: client ids', () => {
  let stack: Stack;
  let admin: Awaited<ReturnType<typeof signIn>>;
  before(async () => {
    stack = await startStack({ worker: false });
    admin = await signIn(stack);
  });
  after(async () => {
    await stack?.stop();
  });

  test('ids made in the console are lower case [a-z0-9][a-z0-9_-]*: others are 400 naming id', async () => {
    for (const id of ['Alice', 'alice.', '-alice', 'ali ce', 'alice\u0000', 'ａlice', '', 'a'.repeat(65)]) {
      const res = await admin('POST', '/admin/api/clients', { id });
      assert.equal(res.status, 400, JSON.stringify(id));
      assert.equal(res.body.code, 'invalid_request');
      assert.match(res.body.error, /\bid\b/);
    }
  });

  test('an env id, its look-alikes and the generated default are refused with 409', async () => {
    for (const id of ['client-a', 'clienta', 'client_a', 'client--a']) {
      const res = await admin('POST', '/admin/api/clients', { id });
      assert.equal(res.status, 409, id);
      assert.equal(res.body.code, 'conflict');
    }
  });

  test('a console id refuses its look-alikes, whatever the case or punctuation', async () => {
    assert.equal((await admin('POST', '/admin/api/clients', { id: 'alice' })).status, 201);
    for (const id of ['alice', 'al-ice', 'a_l_i_c_e', 'alice-']) {
      const res = await admin('POST', '/admin/api/clients', { id });
      assert.equal(res.status, 409, id);
    }
  });

  test('look-alikes created at the same moment: exactly one is made', async () => {
    const ids = ['bob', 'b-ob', 'b_ob', 'bo-b', 'b--ob', 'bob-', 'bo_b', 'b-o-b'];
    const answers = await Promise.all(ids.map((id) => admin('POST', '/admin/api/clients', { id })));
    assert.deepEqual(answers.map((a) => a.status).sort(), [201, 409, 409, 409, 409, 409, 409, 409]);
  });

  test('an id that owned jobs or assets before is refused unless adopted; adoption is audited and inherits them', async () => {
    // A client that once had a job (say, an env client since removed from ZHINIAN_API_KEYS).
    const job = await stack.api('/api/v1/jobs', { method: 'POST', json: { capability: 'image.generate', prompt: 'x', width: 64, height: 64 } });
    assert.equal(job.status, 201);
    const handle = await openTestDb(stack.dataDir);
    try {
      await handle.db.updateTable('jobs').set({ client_id: 'departed' }).where('id', '=', job.body.job.id).execute();
      await handle.db.insertInto('client_ids').values({ id: 'departed', canonical: 'departed', first_seen_at: Date.now() }).execute();
    } finally {
      await handle.close();
    }
    const refused = await admin('POST', '/admin/api/clients', { id: 'departed' });
    assert.equal(refused.status, 409);
    assert.match(refused.body.error, /adopt/);
    assert.equal((await admin('POST', '/admin/api/clients', { id: 'Departed', adopt: true })).status, 400, 'adoption does not relax the id rules');
    const adopted = await admin('POST', '/admin/api/clients', { id: 'departed', adopt: true });
    assert.equal(adopted.status, 201);
    assert.equal(adopted.body.adopted, true);
    const mine = await stack.api(`/api/v1/jobs/${job.body.job.id}`, { key: adopted.body.key.secret });
    assert.equal(mine.status, 200, 'the adopted id owns what it owned');
    const audit = await admin('GET', '/admin/api/audit');
    assert.ok(audit.body.entries.some((e: any) => e.action === 'client.adopt' && e.target === 'departed'));
  });
});

describe('tenants: a console key whose client id later appears in ZHINIAN_API_KEYS', () => {
  test('stays listed and revocable beside the env key', async (t) => {
    const dataDir = tempDir();
    const first = await startStack({ dataDir, worker: false });
    let made: Awaited<ReturnType<Awaited<ReturnType<typeof signIn>>>>;
    try {
      made = await (await signIn(first))('POST', '/admin/api/clients', { id: 'partner-z' });
    } finally {
      await first.stop();
    }
    assert.equal(made.status, 201);

    const second = await startStack({ dataDir, worker: false, env: { ZHINIAN_API_KEYS: `client-a:${KEY_A},partner-z:env-key-for-partner-z` } });
    t.after(() => second.stop());
    const admin2 = await signIn(second);
    const { body } = await admin2('GET', '/admin/api/clients/partner-z');
    assert.equal(body.client.source, 'env');
    assert.deepEqual(body.client.keys.map((k: any) => k.origin).sort(), ['console', 'env']);
    assert.ok(body.client.keys.some((k: any) => k.id === made.body.key.id));
    assert.equal((await second.api('/api/v1/jobs', { key: made.body.key.secret })).status, 200);
    const revoked = await admin2('POST', `/admin/api/keys/${made.body.key.id}/revoke`);
    assert.equal(revoked.status, 200);
    await waitFor(async () => (await second.api('/api/v1/jobs', { key: made.body.key.secret })).status === 401, { timeoutMs: 5000, what: 'revoked' });
    assert.equal((await second.api('/api/v1/jobs', { key: 'env-key-for-partner-z' })).status, 200, 'the env key works on');
  });
});

describe('tenants: webhook signing secrets', () => {
  let stack: Stack;
  let admin: Awaited<ReturnType<typeof signIn>>;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  before(async () => {
    stack = await startStack();
    admin = await signIn(stack);
    receiver = await startReceiver();
  });
  after(async () => {
    await stack?.stop();
    await receiver?.close();
  });

  test("a console client's first delivery is signed with its own secret only, never the shared one", async () => {
    const made = await admin('POST', '/admin/api/clients', { id: 'signed-own' });
    assert.equal(made.status, 201);
    assert.match(made.body.webhookSecret, /^whsec_[A-Za-z0-9+/=]+$/);
    const listed = await admin('GET', '/admin/api/clients/signed-own');
    assert.ok(!JSON.stringify(listed.body).includes(made.body.webhookSecret), 'shown once');
    assert.equal(listed.body.client.webhookSigning, 'own');
    assert.equal(listed.body.client.sharesWebhookSecret, false);

    const job = { capability: 'image.generate', prompt: 'a fox', width: 64, height: 64, webhookUrl: receiver.url };
    const created = await stack.api('/api/v1/jobs', { key: made.body.key.secret, method: 'POST', json: job });
    assert.equal(created.status, 201);
    const hook = await waitFor(() => receiver.hooks.find((h) => h.body.job.id === created.body.job.id), { timeoutMs: 30_000, what: 'webhook' });
    assert.equal(hook.body.clientId, 'signed-own');
    assert.equal(hook.headers['x-zhinian-signature'], `sha256=${hmacHex(made.body.webhookSecret, hook.raw)}`);
  });

  test('env clients without their own secret are shown as sharing ZHINIAN_WEBHOOK_SECRET', async () => {
    const { body } = await admin('GET', '/admin/api/clients');
    const a = body.clients.find((c: any) => c.id === 'client-a');
    assert.equal(a.webhookSigning, 'shared');
    assert.equal(a.sharesWebhookSecret, true);
    assert.ok(!JSON.stringify(body).includes(WEBHOOK_SECRET));
  });
});

describe('tenants: env keys show nothing of the key', () => {
  test('no prefix, no hash: only their origin, first sight and last use (never before it)', async (t) => {
    const weak = 'weak-env-key-1';
    const stack = await startStack({ worker: false, env: { ZHINIAN_API_KEYS: `client-a:${KEY_A},client-w:${weak}` } });
    t.after(() => stack.stop());
    const admin = await signIn(stack);
    assert.equal((await stack.api('/api/v1/jobs', { key: weak })).status, 200);
    const { createHash } = await import('node:crypto');
    const hash = createHash('sha256').update(weak).digest('hex');
    const lastUsed = await waitFor(
      async () => {
        const { body } = await admin('GET', '/admin/api/clients/client-w');
        return body.client.keys[0].lastUsedAt ? body : null;
      },
      { timeoutMs: 15_000, what: 'last use recorded' },
    );
    const key = lastUsed.client.keys[0];
    assert.equal(key.origin, 'env');
    assert.equal(key.prefix, '');
    assert.ok(key.createdAt !== null && key.lastUsedAt >= key.createdAt, 'last used never before first seen');
    const text = JSON.stringify(lastUsed);
    for (const leak of [weak, weak.slice(0, 4), hash.slice(0, 8), hash.slice(0, 16)]) assert.ok(!text.includes(leak), `shows ${leak}`);
    const pages = await Promise.all(['/admin/clients', '/admin/clients/client-w', '/admin/settings'].map((p) => admin('GET', p)));
    for (const page of pages) for (const leak of [weak, hash.slice(0, 8)]) assert.ok(!page.text.includes(leak), `a page shows ${leak}`);
  });

  test('the generated default key is labelled generated', async (t) => {
    const stack = await startStack({ worker: false, env: { ZHINIAN_API_KEYS: '' } });
    t.after(() => stack.stop());
    const admin = await signIn(stack);
    const { body } = await admin('GET', '/admin/api/clients/default');
    assert.equal(body.client.keys[0].origin, 'generated');
  });
});
