import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { computeVolcSignature, formatXDate, rfc3986Encode, sha256Hex, signVolcRequest, verifyVolcSignature, type VolcSignInput } from './volc-sign.ts';

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** V1: the vendor's documentation sample (docs/providers.md §2.2). */
const V1: VolcSignInput = {
  method: 'GET',
  host: 'iam.volcengineapi.com',
  path: '/',
  query: { Action: 'ListUsers', Version: '2018-01-01', Limit: '10', Offset: '0' },
  headers: { 'Content-Type': 'application/x-www-form-urlencoded; charset=utf-8' },
  body: '',
  accessKeyId: 'AKLTMjI2ODVlYzI3ZGY1NGU4ZjhjYWRjMTlmNTM5OTZkYzE',
  secretAccessKey: 'TnpCak5XWXpZV1U0WkRaaE5ERmxaR0ZpTmpjeVkyUXlZek0wTWpJMU1qWQ==',
  region: 'cn-north-1',
  service: 'iam',
  xDate: '20201230T081805Z',
};

const V2_BODY = '{"req_key":"jimeng_t2i_v40","prompt":"a red fox in snow","force_single":true}';
const V2: VolcSignInput = {
  method: 'POST',
  host: 'visual.volcengineapi.com',
  path: '/',
  query: { Action: 'CVSync2AsyncSubmitTask', Version: '2022-08-31' },
  headers: { 'Content-Type': 'application/json' },
  body: V2_BODY,
  accessKeyId: 'AKLTEXAMPLEACCESSKEY',
  secretAccessKey: 'EXAMPLESECRETKEY==',
  region: 'cn-north-1',
  service: 'cv',
  xDate: '20250101T000000Z',
};
const V3: VolcSignInput = {
  ...V2,
  query: { Action: 'CVSync2AsyncGetResult', Version: '2022-08-31' },
  body: '{"req_key":"jimeng_t2i_v40","task_id":"7392616336519610409","req_json":"{\\"return_url\\":true}"}',
};
const V4: VolcSignInput = { ...V2, host: '127.0.0.1:18080' };

/** The signing steps, with the headers signVolcRequest adds, for checking intermediate values. */
function stepsOf(input: VolcSignInput) {
  const sent = signVolcRequest(input);
  const signedHeaders = Object.fromEntries(
    Object.entries(sent)
      .filter(([name]) => name !== 'Authorization')
      .map(([name, value]) => [name.toLowerCase(), value]),
  );
  const steps = computeVolcSignature({ ...input, signedHeaders, bodyHash: sha256Hex(input.body), xDate: String(input.xDate) });
  return { sent, steps };
}

function signatureOf(authorization: string): string {
  return /Signature=([0-9a-f]+)$/.exec(authorization)![1]!;
}

describe('Volcengine V4 signing vectors', () => {
  test('V1 (vendor sample) reproduces the published canonical-request hash and signature', () => {
    const { sent, steps } = stepsOf(V1);
    assert.equal(sent['X-Content-Sha256'], EMPTY_SHA256);
    assert.equal(steps.canonicalRequestHash, '3a4d4dee07c3308a52da01bc12d7a83c3705bfa543f51648f46de880bb2a7447');
    assert.equal(signatureOf(sent.Authorization!), '28eeabbbd726b87002e0fe58ad8c1c768e619b06e2646f35b6ad7ed029a6d8a7');
    assert.equal(steps.signedHeaders, 'content-type;host;x-content-sha256;x-date');
  });

  test('V2 submit: body hash, canonical request, kSigning and the whole Authorization header', () => {
    const { sent, steps } = stepsOf(V2);
    assert.equal(sent['X-Content-Sha256'], '739e46faf995a4aacd77c659dc346e8480ae321f9d001990dc59a3fbbeed8ab6');
    assert.equal(
      steps.canonicalRequest,
      [
        'POST',
        '/',
        'Action=CVSync2AsyncSubmitTask&Version=2022-08-31',
        'content-type:application/json',
        'host:visual.volcengineapi.com',
        'x-content-sha256:739e46faf995a4aacd77c659dc346e8480ae321f9d001990dc59a3fbbeed8ab6',
        'x-date:20250101T000000Z',
        '',
        'content-type;host;x-content-sha256;x-date',
        '739e46faf995a4aacd77c659dc346e8480ae321f9d001990dc59a3fbbeed8ab6',
      ].join('\n'),
    );
    assert.equal(steps.canonicalRequestHash, '568042f8d4b58d25a9d9a3ad37ce6876531e0fd5dbd14e3c2dd3a408f21d18f5');
    assert.equal(steps.signingKey.toString('hex'), 'b9d71e0f73c9b8b0f5968c1e1c38df9688c4dd6dc70a64ec9028deac38a6143c');
    assert.equal(
      sent.Authorization,
      'HMAC-SHA256 Credential=AKLTEXAMPLEACCESSKEY/20250101/cn-north-1/cv/request, SignedHeaders=content-type;host;x-content-sha256;x-date, Signature=6ff73458deda5c86f727976dd55fa11a89c6f6bb5047c2f7da4a080feae3a24a',
    );
  });

  test('V3 poll with a JSON-encoded req_json string', () => {
    const { sent, steps } = stepsOf(V3);
    assert.equal(sent['X-Content-Sha256'], '72bc0f27b583a6cd9fb1a5acdb4dcd116821b16384838a8e4fc7a8eebac52b1e');
    assert.equal(steps.canonicalRequestHash, '0512885aba5e72f10c91466fe71b46b0e7e7eb7da071226827383cd84f4fb47b');
    assert.equal(signatureOf(sent.Authorization!), '6c2484b44fb07956eaa36178b0ff54f09c70c9679674303963d1189f2d70b0e7');
  });

  test('V4 keeps a non-default port in the signed host', () => {
    const { sent, steps } = stepsOf(V4);
    assert.equal(sent.Host, '127.0.0.1:18080');
    assert.equal(steps.canonicalRequestHash, 'e5db48dcba48cde4c4a69eedad57033e948ae43531e72ba6f713473bbc81ac74');
    assert.equal(signatureOf(sent.Authorization!), '9a3bc81036b60e89cb28ed9bd611d946180aa412820b70c699bcbe8ef2253a49');
  });
});

describe('signing details', () => {
  test('query values use RFC 3986 encoding, including the characters encodeURIComponent leaves', () => {
    assert.equal(rfc3986Encode("a b!'()*~-_."), 'a%20b%21%27%28%29%2A~-_.');
  });

  test('X-Date is compact UTC', () => {
    assert.equal(formatXDate(new Date('2025-01-01T00:00:00.123Z')), '20250101T000000Z');
  });

  test('an STS token is sent and signed as X-Security-Token', () => {
    const sent = signVolcRequest({ ...V2, securityToken: 'sts-token' });
    assert.equal(sent['X-Security-Token'], 'sts-token');
    assert.match(sent.Authorization!, /SignedHeaders=content-type;host;x-content-sha256;x-date;x-security-token,/);
    assert.notEqual(signatureOf(sent.Authorization!), '6ff73458deda5c86f727976dd55fa11a89c6f6bb5047c2f7da4a080feae3a24a');
  });
});

describe('verifyVolcSignature', () => {
  const secrets = (ak: string) => (ak === V2.accessKeyId ? V2.secretAccessKey : undefined);
  function received(input: VolcSignInput, tamper: (headers: Record<string, string>) => void = () => {}) {
    const headers = Object.fromEntries(Object.entries(signVolcRequest(input)).map(([k, v]) => [k.toLowerCase(), v]));
    tamper(headers);
    return { method: input.method, path: input.path, query: input.query, headers, body: input.body };
  }

  test('accepts what signVolcRequest produced, with or without an STS token', () => {
    assert.deepEqual(verifyVolcSignature(received(V2), secrets), {
      ok: true,
      accessKeyId: V2.accessKeyId,
      region: 'cn-north-1',
      service: 'cv',
      signedHeaders: ['content-type', 'host', 'x-content-sha256', 'x-date'],
    });
    assert.equal(verifyVolcSignature(received({ ...V2, securityToken: 't' }), secrets).ok, true);
  });

  test('rejects a wrong secret, a changed body, a changed signed header and an unknown key', () => {
    const wrongSecret = verifyVolcSignature(received({ ...V2, secretAccessKey: 'nope' }), secrets);
    assert.deepEqual(wrongSecret, { ok: false, reason: 'signature does not match' });
    const changedBody = { ...received(V2), body: V2_BODY.replace('fox', 'cat') };
    assert.equal(verifyVolcSignature(changedBody, secrets).ok, false);
    const changedHost = received(V2, (h) => (h.host = 'other.example'));
    assert.deepEqual(verifyVolcSignature(changedHost, secrets), { ok: false, reason: 'signature does not match' });
    assert.deepEqual(verifyVolcSignature(received({ ...V2, accessKeyId: 'AKLTOTHER' }), secrets), { ok: false, reason: 'unknown access key' });
  });

  test('requires host and x-date among the signed headers', () => {
    const headers = { ...received(V2).headers };
    headers.authorization = headers.authorization!.replace('content-type;host;x-content-sha256;x-date', 'content-type;x-content-sha256;x-date');
    assert.deepEqual(verifyVolcSignature({ ...received(V2), headers }, secrets), { ok: false, reason: 'host not signed' });
  });
});
