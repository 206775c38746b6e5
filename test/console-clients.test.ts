// @backends sqlite,postgres
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { consoleSignIn, redeemAdminLink } from './console-helpers.ts';
import { callApi, KEY_A, KEY_B, startReceiver, startStack, tempDir, WEBHOOK_SECRET, waitFor, type Stack } from './helpers.ts';

/** The console's JSON API as an admin: (method, path, JSON body). */
async function signIn(stack: Stack) {
  const call = await consoleSignIn(stack);
  return (method: string, p: string, json?: unknown) => call(method, p, { json });
}

const hmacHex = (secret: string | Buffer, data: string) => createHmac('sha256', secret).update(data).digest('hex');

describe('console: clients and keys', () => {
  let stack: Stack;
  let admin: Awaited<ReturnType<typeof signIn>>;
  before(async () => {
    stack = await startStack({ worker: false });
    admin = await signIn(stack);
  });
  after(() => stack.stop());

  test('a console key opens /api/v1 until revoked; it is kept only as a hash', async () => {
    const created = await admin('POST', '/admin/api/clients', { id: 'partner-c', name: 'Partner C' });
    assert.equal(created.status, 201);
    const { client, key } = created.body;
    assert.equal(client.id, 'partner-c');
    assert.equal(client.source, 'console');
    assert.match(key.secret, /^zk_[0-9a-z]{26}_[A-Za-z0-9_-]{43}$/);
    assert.ok(key.secret.startsWith(key.prefix));
    assert.equal((await stack.api('/api/v1/jobs', { key: key.secret })).status, 200);

    const listed = await admin('GET', '/admin/api/clients');
    const c = listed.body.clients.find((x: { id: string }) => x.id === 'partner-c');
    assert.equal(c.keys.length, 1);
    assert.equal(c.keys[0].id, key.id);
    assert.equal(JSON.stringify(listed.body).includes(key.secret), false, 'the secret is never shown again');

    // A second key works beside the first.
    const second = await admin('POST', '/admin/api/clients/partner-c/keys', {});
    assert.equal(second.status, 201);
    assert.equal((await stack.api('/api/v1/jobs', { key: second.body.key.secret })).status, 200);

    const revoked = await admin('POST', `/admin/api/keys/${key.id}/revoke`);
    assert.equal(revoked.status, 200);
    assert.ok(revoked.body.key.revokedAt);
    // CONTRACT: refused within 5 s on every instance (the cache holds 2 s).
    await waitFor(async () => (await stack.api('/api/v1/jobs', { key: key.secret })).status === 401, { timeoutMs: 5000, what: 'revoked key refused' });
    assert.equal((await stack.api('/api/v1/jobs', { key: second.body.key.secret })).status, 200, 'the other key still works');
    // Right id, wrong secret: refused.
    const forged = `${second.body.key.prefix}_${'A'.repeat(43)}`;
    assert.equal((await stack.api('/api/v1/jobs', { key: forged })).status, 401);
  });

  test('a key with an expiry stops working then; an expiry in the past is refused', async () => {
    const past = await admin('POST', '/admin/api/clients/partner-c/keys', { expiresAt: new Date(Date.now() - 1000).toISOString() });
    assert.equal(past.status, 400);
    assert.match(past.body.error, /^expiresAt: /);
    const soon = await admin('POST', '/admin/api/clients/partner-c/keys', { expiresAt: new Date(Date.now() + 1500).toISOString() });
    assert.equal(soon.status, 201);
    await waitFor(async () => (await stack.api('/api/v1/jobs', { key: soon.body.key.secret })).status === 401, { timeoutMs: 15_000, what: 'expired key refused' });
    const { body } = await admin('GET', '/admin/api/clients/partner-c');
    assert.ok(body.client.keys.find((k: { id: string }) => k.id === soon.body.key.id).expiresAt);
  });

  test('lastUsedAt is written in batches, not per request', async () => {
    const { body } = await admin('POST', '/admin/api/clients', { id: 'partner-used' });
    assert.equal((await stack.api('/api/v1/jobs', { key: body.key.secret })).status, 200);
    await waitFor(
      async () => {
        const { body: listed } = await admin('GET', '/admin/api/clients/partner-used');
        return listed.client.keys[0].lastUsedAt;
      },
      { timeoutMs: 20_000, what: 'lastUsedAt written' },
    );
  });

  test('ids: taken ids and env ids are 409, bad ids 400 naming the field', async () => {
    assert.equal((await admin('POST', '/admin/api/clients', { id: 'partner-c' })).status, 409);
    assert.equal((await admin('POST', '/admin/api/clients', { id: 'client-a' })).status, 409);
    const bad = await admin('POST', '/admin/api/clients', { id: '../etc' });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /^id: /);
    assert.equal((await admin('POST', '/admin/api/clients', { id: 'x', extra: 1 })).status, 400);
    assert.equal((await admin('POST', '/admin/api/clients/nobody/keys', {})).status, 404);
  });

  test('env clients show read-only keys; their settings can change; disabled means 401 within 5 s', async () => {
    const { body } = await admin('GET', '/admin/api/clients');
    const a = body.clients.find((x: { id: string }) => x.id === 'client-a');
    assert.equal(a.source, 'env');
    assert.equal(a.keys.length, 1);
    assert.equal(JSON.stringify(body).includes(KEY_A), false, 'env keys are not shown');
    assert.equal((await admin('POST', '/admin/api/clients/client-a/keys', {})).status, 409);

    const disabled = await admin('PATCH', '/admin/api/clients/client-a', { disabled: true, name: 'Client A' });
    assert.equal(disabled.status, 200);
    assert.equal(disabled.body.client.disabled, true);
    assert.equal(disabled.body.client.name, 'Client A');
    await waitFor(async () => (await stack.api('/api/v1/jobs', { key: KEY_A })).status === 401, { timeoutMs: 5000, what: 'disabled client refused' });
    assert.equal((await stack.api('/api/v1/jobs', { key: KEY_B })).status, 200);
    await admin('PATCH', '/admin/api/clients/client-a', { disabled: false });
    await waitFor(async () => (await stack.api('/api/v1/jobs', { key: KEY_A })).status === 200, { timeoutMs: 5000, what: 'enabled again' });
  });

  test('settings: validated, null resets to the env default, every change audited', async () => {
    const set = await admin('PATCH', '/admin/api/clients/client-b', { maxRunning: 3, weight: 2, rateLimitJobsPerMinute: 100, rateLimitRequestsPerMinute: 1000 });
    assert.equal(set.status, 200);
    assert.deepEqual(
      { ...set.body.client.settings },
      { maxRunning: 3, weight: 2, rateLimitJobsPerMinute: 100, rateLimitRequestsPerMinute: 1000, allowedEngines: null, webhookSecretSet: false },
    );
    const reset = await admin('PATCH', '/admin/api/clients/client-b', { maxRunning: null, weight: null });
    assert.equal(reset.body.client.settings.maxRunning, null);
    assert.equal(reset.body.client.settings.weight, null);
    for (const bad of [{ weight: 0 }, { maxRunning: -1 }, { allowedEngines: ['no-such-engine'] }, { nope: 1 }, { disabled: 'yes' }]) {
      const answer = await admin('PATCH', '/admin/api/clients/client-b', bad);
      assert.equal(answer.status, 400, JSON.stringify(bad));
      assert.equal(answer.body.code, 'invalid_request');
    }
    assert.equal((await admin('PATCH', '/admin/api/clients/nobody', { weight: 2 })).status, 404);
    const { body } = await admin('GET', '/admin/api/audit?limit=200');
    const updates = body.entries.filter((e: { action: string; target: string }) => e.action === 'client.update' && e.target === 'client-b');
    assert.equal(updates.length, 2, 'one entry per accepted change, none for refused ones');
    assert.equal(updates[0].detail.after.maxRunning, null);
    assert.equal(updates[0].detail.before.maxRunning, 3);
    for (const action of ['client.create', 'key.create', 'key.revoke']) {
      assert.ok(
        body.entries.some((e: { action: string }) => e.action === action),
        action,
      );
    }
  });

  test('allowed engines: a client kept off every engine of a capability gets 403 naming the engine', async () => {
    await admin('PATCH', '/admin/api/clients/client-b', { allowedEngines: [] });
    const job = { capability: 'image.generate', prompt: 'a fox', width: 64, height: 64 };
    await waitFor(async () => (await stack.api('/api/v1/jobs', { key: KEY_B, method: 'POST', json: job })).status === 403, { timeoutMs: 5000, what: 'engine refused' });
    const pinned = await stack.api('/api/v1/jobs', { key: KEY_B, method: 'POST', json: { ...job, engine: 'local' } });
    assert.equal(pinned.status, 403);
    assert.equal(pinned.body.code, 'forbidden');
    assert.match(pinned.body.error, /^engine: /);
    await admin('PATCH', '/admin/api/clients/client-b', { allowedEngines: ['local'] });
    await waitFor(async () => (await stack.api('/api/v1/jobs', { key: KEY_B, method: 'POST', json: job })).status === 201, { timeoutMs: 5000, what: 'engine allowed' });
    await admin('PATCH', '/admin/api/clients/client-b', { allowedEngines: null });
  });
});

describe('console: two API instances on one database', () => {
  let first: Stack;
  let second: Stack;
  before(async () => {
    const dataDir = tempDir();
    first = await startStack({ dataDir, worker: false });
    second = await startStack({ dataDir, worker: false });
  });
  after(async () => {
    await first.stop();
    await second.stop();
  });

  test('a session made on one instance works on the other, and signing out on one ends it on both', async () => {
    const res = await redeemAdminLink(first.adminLink!);
    const jar = res.headers
      .getSetCookie()
      .find((c) => c.startsWith('zhinian_console='))!
      .split(';')[0];
    const me = await fetch(`${second.url}/admin/api/me`, { headers: { cookie: jar } });
    assert.equal(me.status, 200);
    const { csrfToken } = (await me.json()) as { csrfToken: string };
    const out = await fetch(`${second.url}/admin/auth/logout`, { method: 'POST', headers: { cookie: jar, 'x-csrf-token': csrfToken } });
    assert.equal(out.status, 204);
    assert.equal((await fetch(`${first.url}/admin/api/me`, { headers: { cookie: jar } })).status, 401);
  });

  test('a key made and revoked on one instance is refused by the other within 5 s', async () => {
    // first.adminLink was used above (one use only); second's link signs in just as well.
    const admin = await signIn(second);
    const { body } = await admin('POST', '/admin/api/clients', { id: 'partner-x' });
    assert.equal((await callApi(first.url, '/api/v1/jobs', { key: body.key.secret })).status, 200);
    // Revoked through the second instance, refused by the first.
    await admin('POST', `/admin/api/keys/${body.key.id}/revoke`);
    await waitFor(async () => (await callApi(first.url, '/api/v1/jobs', { key: body.key.secret })).status === 401, { timeoutMs: 5000, what: 'refused on the other instance' });
  });
});

describe('console: a client webhook secret signs only that client’s deliveries', () => {
  let stack: Stack;
  let admin: Awaited<ReturnType<typeof signIn>>;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  before(async () => {
    stack = await startStack();
    admin = await signIn(stack);
    receiver = await startReceiver();
  });
  after(async () => {
    await stack.stop();
    await receiver.close();
  });

  async function deliveredFor(key: string) {
    const job = { capability: 'image.generate', prompt: 'a fox', width: 64, height: 64, webhookUrl: receiver.url };
    const created = await stack.api('/api/v1/jobs', { key, method: 'POST', json: job });
    assert.equal(created.status, 201);
    return waitFor(() => receiver.hooks.find((h) => h.body.job.id === created.body.job.id), { timeoutMs: 30_000, what: 'webhook received' });
  }

  function standardSignatures(hook: { headers: Record<string, unknown>; raw: string }, secret: string) {
    const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice('whsec_'.length), 'base64') : Buffer.from(secret);
    return createHmac('sha256', key).update(`${hook.headers['webhook-id']}.${hook.headers['webhook-timestamp']}.${hook.raw}`).digest('base64');
  }

  test('rotation: the new secret signs at once, each previous one (the shared one too) beside it for its 24 h; other clients keep the global secret', async () => {
    const before = await deliveredFor(KEY_A);
    assert.equal(before.headers['x-zhinian-signature'], `sha256=${hmacHex(WEBHOOK_SECRET, before.raw)}`);
    assert.equal(before.headers['webhook-id'], before.headers['x-zhinian-delivery']);
    assert.equal(before.body.clientId, 'client-a');

    const first = await admin('POST', '/admin/api/clients/client-a/webhook-secret');
    assert.equal(first.status, 201);
    assert.match(first.body.secret, /^whsec_[A-Za-z0-9+/=]+$/);
    const signedByFirst = await waitFor(
      async () => {
        const hook = await deliveredFor(KEY_A);
        return String(hook.headers['x-zhinian-signature']).startsWith(`sha256=${hmacHex(first.body.secret, hook.raw)}`) ? hook : null;
      },
      { timeoutMs: 30_000, what: 'signed with the client secret' },
    );
    // The first rotation away from the shared secret keeps it signing beside the new one: receivers switch over in their own time.
    assert.equal(signedByFirst.headers['x-zhinian-signature'], `sha256=${hmacHex(first.body.secret, signedByFirst.raw)} sha256=${hmacHex(WEBHOOK_SECRET, signedByFirst.raw)}`);
    assert.equal(signedByFirst.headers['webhook-signature'], `v1,${standardSignatures(signedByFirst, first.body.secret)} v1,${standardSignatures(signedByFirst, WEBHOOK_SECRET)}`);

    const other = await deliveredFor(KEY_B);
    assert.equal(other.headers['x-zhinian-signature'], `sha256=${hmacHex(WEBHOOK_SECRET, other.raw)}`, 'client-b is not signed with client-a’s secret');

    const second = await admin('POST', '/admin/api/clients/client-a/webhook-secret');
    const both = await waitFor(
      async () => {
        const hook = await deliveredFor(KEY_A);
        return String(hook.headers['x-zhinian-signature']).startsWith(`sha256=${hmacHex(second.body.secret, hook.raw)}`) ? hook : null;
      },
      { timeoutMs: 30_000, what: 'signed with the newest secret' },
    );
    // A quick second rotation cuts no earlier overlap short: all three sign until each one's 24 h end.
    const secrets = [second.body.secret, first.body.secret, WEBHOOK_SECRET];
    assert.equal(both.headers['x-zhinian-signature'], secrets.map((s) => `sha256=${hmacHex(s, both.raw)}`).join(' '));
    assert.equal(both.headers['webhook-signature'], secrets.map((s) => `v1,${standardSignatures(both, s)}`).join(' '));
    const { body } = await admin('GET', '/admin/api/clients/client-a');
    assert.equal(body.client.settings.webhookSecretSet, true);
    assert.equal(JSON.stringify(body).includes(second.body.secret), false);
  });
});
