/**
 * A fake Volcengine Visual (Jimeng) API, docs/providers.md §5.2. It checks what the real one is known
 * to check — signatures rebuilt from the client's SignedHeaders, req_keys, image counts, size
 * and ratio bounds, scale units — and answers with the documented envelope. Its rules are its
 * own (not imported from the adapter's mapping), so the tests compare two readings of the spec.
 *
 * Fake-only scenarios beyond the shared ones: `concurrency` (429/50430), `bad_gateway` (502 HTML),
 * `poll_rate_limit` / `poll_server_error` (the task's first poll answers 429/50429 or 500/50500).
 * `quota` has no Jimeng counterpart (no quota code is documented) and behaves as `ok`.
 */
import { randomBytes, randomInt } from 'node:crypto';
import sharp, { type Metadata } from 'sharp';
import { verifyVolcSignature } from '../../src/engines/providers/volc-sign.ts';
import { createFakeServer, resultFileBytes, scenarioOf, type FakeResponse, type FakeServer, type RecordedRequest, type SlowFileOptions, type TaskTiming } from './common.ts';

export const FAKE_VOLC_ACCESS_KEY_ID = 'AKLTFAKEJIMENGACCESSKEY';
export const FAKE_VOLC_SECRET_ACCESS_KEY = 'ZmFrZS1qaW1lbmctc2VjcmV0==';

const VERSION = '2022-08-31';
const MIN_AREA = 1048576;
const MAX_AREA = 16777216;

type TaskKind = 'generate' | 'inpaint' | 'upscale';

/** The fake's own reading of §2.3. */
const REQ_KEYS: Record<string, { kind: TaskKind; scale?: 'fraction' | 'integer'; maxUrls?: number }> = {
  jimeng_t2i_v40: { kind: 'generate', scale: 'fraction', maxUrls: 10 },
  jimeng_seedream46_cvtob: { kind: 'generate', scale: 'integer', maxUrls: 14 },
  jimeng_image2image_dream_inpaint: { kind: 'inpaint' },
  jimeng_i2i_seed3_tilesr_cvtob: { kind: 'upscale' },
};

export interface FakeJimengOptions extends TaskTiming {
  /** Access key id → secret (default: the FAKE_VOLC_* pair). */
  credentials?: Record<string, string>;
  /** When set, every request must carry this X-Security-Token, signed. */
  securityToken?: string;
  /** Images per generate task without `force_single` (default 2). */
  multiCount?: number;
  /** GET every `image_urls` entry on submit and record the outcome. */
  fetchInputs?: boolean;
  slowFile?: boolean | SlowFileOptions;
  /** Answer `task_id` as a bare JSON number, as a careless gateway might (precision trap). */
  numericTaskIds?: boolean;
  /** Answer base64 images even when `return_url` is asked for (as without it). */
  returnBase64?: boolean;
}

interface FakeJimengTask {
  id: string;
  reqKey: string;
  kind: TaskKind;
  createdAt: number;
  scenario: string;
  /** The submit body as received. */
  body: any;
  imageCount: number;
  /** Size of the images the task reports. */
  width: number;
  height: number;
  polls: number;
}

export interface FakeJimeng {
  baseUrl: string;
  close(): Promise<void>;
  requests: RecordedRequest[];
  tasks: Map<string, FakeJimengTask>;
  setScenario(name: string, opts?: { times?: number }): void;
  /** Submit calls received, accepted or not. */
  readonly submitCount: number;
  server: FakeServer;
}

export async function startFakeJimeng(opts: FakeJimengOptions = {}): Promise<FakeJimeng> {
  const credentials = opts.credentials ?? { [FAKE_VOLC_ACCESS_KEY_ID]: FAKE_VOLC_SECRET_ACCESS_KEY };
  const tasks = new Map<string, FakeJimengTask>();
  let submitCount = 0;

  const server: FakeServer = await createFakeServer({
    ...opts,
    routes: [{ method: 'POST', path: '/', handle: (req) => handle(req) }],
    fallback: () => gatewayError(404, 'InvalidActionOrVersion', 'Could not find operation'),
  });

  async function handle(req: RecordedRequest): Promise<FakeResponse> {
    if (req.query.Version !== VERSION) return gatewayError(404, 'InvalidActionOrVersion', `unknown version ${req.query.Version}`);
    const authFailure = checkAuth(req);
    if (authFailure) return authFailure;
    if (req.query.Action === 'CVSync2AsyncSubmitTask') return submit(req);
    if (req.query.Action === 'CVSync2AsyncGetResult') return getResult(req);
    return gatewayError(404, 'InvalidActionOrVersion', `unknown action ${req.query.Action}`);
  }

  function checkAuth(req: RecordedRequest): FakeResponse | null {
    if (server.scenarios.peek() === 'bad_auth') {
      server.scenarios.take();
      return gatewayError(401, 'SignatureDoesNotMatch', 'bad_auth scenario');
    }
    const verdict = verifyVolcSignature({ ...req, body: req.rawBody }, (ak) => credentials[ak]);
    if (!verdict.ok) return gatewayError(401, 'SignatureDoesNotMatch', verdict.reason);
    if (verdict.service !== 'cv' || verdict.region !== 'cn-north-1') return gatewayError(401, 'SignatureDoesNotMatch', 'wrong credential scope');
    if (opts.securityToken !== undefined) {
      const token = req.headers['x-security-token'];
      if (token !== opts.securityToken || !verdict.signedHeaders.includes('x-security-token')) {
        return gatewayError(401, 'InvalidSecurityToken', 'missing or unsigned X-Security-Token');
      }
    }
    return null;
  }

  async function submit(req: RecordedRequest): Promise<FakeResponse> {
    submitCount++;
    const body = req.body ?? {};
    const scenario = scenarioOf(body.prompt, server.scenarios);
    const injected = submitFault(scenario);
    if (injected) return injected;
    const checked = await checkSubmit(body);
    if ('invalid' in checked) return invalidInput(checked.invalid);
    if (Array.isArray(body.image_urls)) await server.fetchInputs(body.image_urls);
    const task: FakeJimengTask = {
      id: newTaskId(),
      reqKey: body.req_key,
      kind: checked.kind,
      createdAt: server.clock.now(),
      scenario,
      body,
      imageCount: checked.kind === 'generate' && body.force_single !== true ? (opts.multiCount ?? 2) : 1,
      width: checked.width,
      height: checked.height,
      polls: 0,
    };
    tasks.set(task.id, task);
    if (opts.numericTaskIds) {
      // Hand-written JSON: JSON.stringify cannot emit a 19-digit integer exactly.
      const text = JSON.stringify(envelope(10000, { task_id: 'ID' })).replace('"ID"', task.id);
      return { status: 200, body: text, headers: { 'content-type': 'application/json' } };
    }
    return { status: 200, json: envelope(10000, { task_id: task.id }) };
  }

  async function getResult(req: RecordedRequest): Promise<FakeResponse> {
    const body = req.body ?? {};
    if (typeof body.task_id !== 'string' || !/^\d+$/.test(body.task_id)) return invalidInput('task_id must be a numeric string');
    const task = tasks.get(body.task_id);
    if (!task) return { status: 200, json: envelope(10000, waiting('not_found')) };
    if (body.req_key !== task.reqKey) return invalidInput('req_key differs from the submit');
    task.polls++;
    if (task.scenario === 'task_lost') return { status: 200, json: envelope(10000, waiting('not_found')) };
    if (task.polls === 1 && task.scenario === 'poll_rate_limit') return apiError(429, 50429, 'Request Has Reached API Limit, Please Try Later');
    if (task.polls === 1 && task.scenario === 'poll_server_error') return apiError(500, 50500, 'Internal Error');

    const phase = server.clock.phaseOf(task.createdAt);
    if (phase === 'queued') return { status: 200, json: envelope(10000, waiting('in_queue')) };
    if (phase === 'running' || task.scenario === 'never_finish') return { status: 200, json: envelope(10000, waiting('generating')) };
    if (task.scenario === 'moderation_result') return apiError(400, 50511, 'Post Img Risk Not Pass');
    if (task.scenario === 'provider_expired') return { status: 200, json: envelope(10000, waiting('expired')) };
    return { status: 200, json: envelope(10000, await doneData(task, wantsUrls(body.req_json) && !opts.returnBase64)) };
  }

  async function doneData(task: FakeJimengTask, urls: boolean): Promise<object> {
    const spec = { kind: 'png' as const, width: task.width, height: task.height };
    const indexes = Array.from({ length: task.imageCount }, (_, n) => n);
    if (urls) {
      const forbidden = task.scenario === 'url_expired';
      return { status: 'done', image_urls: indexes.map((n) => server.fileUrl(task.id, n, spec, { forbidden })), binary_data_base64: null };
    }
    const { bytes } = await resultFileBytes(spec);
    return { status: 'done', image_urls: null, binary_data_base64: indexes.map(() => bytes.toString('base64')) };
  }

  return {
    baseUrl: server.baseUrl,
    close: () => server.close(),
    requests: server.requests,
    tasks,
    setScenario: (name, scenarioOpts) => server.scenarios.set(name, scenarioOpts),
    get submitCount() {
      return submitCount;
    },
    server,
  };
}

// ---------------------------------------------------------------------------------------------
// Submit checks

type Checked = { kind: TaskKind; width: number; height: number } | { invalid: string };

async function checkSubmit(body: any): Promise<Checked> {
  const model = REQ_KEYS[body.req_key];
  if (!model) return { invalid: `unknown req_key ${body.req_key}` };
  if (model.kind === 'generate') return checkGenerate(body, model);
  const images = await decodeInputs(body);
  if ('invalid' in images) return images;
  if (model.kind === 'inpaint') {
    if (!nonEmptyString(body.prompt)) return { invalid: 'no prompt' };
    if (images.length !== 2) return { invalid: 'inpaint needs exactly 2 images' };
    const [original, mask] = images as [Metadata, Metadata];
    if (mask.channels !== 1) return { invalid: 'mask must be single-channel grey' };
    if (mask.width !== original.width || mask.height !== original.height) return { invalid: 'mask size differs from the original' };
    return { kind: 'inpaint', width: original.width!, height: original.height! };
  }
  if (images.length !== 1) return { invalid: 'upscale needs exactly 1 image' };
  const resolution = body.resolution ?? '4k';
  if (resolution !== '4k' && resolution !== '8k') return { invalid: `bad resolution ${resolution}` };
  // Output size is undocumented [U]: the input scaled to a 4096 / 8192 long side.
  const [input] = images as [Metadata];
  const factor = (resolution === '8k' ? 8192 : 4096) / Math.max(input.width!, input.height!);
  return { kind: 'upscale', width: Math.round(input.width! * factor), height: Math.round(input.height! * factor) };
}

function checkGenerate(body: any, model: (typeof REQ_KEYS)[string]): Checked {
  if (!nonEmptyString(body.prompt)) return { invalid: 'no prompt' };
  if (body.image_urls !== undefined) {
    if (!Array.isArray(body.image_urls) || body.image_urls.length > model.maxUrls!) return { invalid: 'too many image_urls' };
    if (!body.image_urls.every((u: unknown) => typeof u === 'string' && /^https?:\/\//.test(u))) return { invalid: 'image_urls must be http(s) URLs' };
  }
  if (body.scale !== undefined) {
    const ok =
      model.scale === 'fraction' ? typeof body.scale === 'number' && body.scale >= 0 && body.scale <= 1 : Number.isInteger(body.scale) && body.scale >= 1 && body.scale <= 100;
    if (!ok) return { invalid: `scale ${body.scale} out of range` };
  }
  if (body.force_single !== undefined && typeof body.force_single !== 'boolean') return { invalid: 'force_single must be boolean' };
  if ((body.width === undefined) !== (body.height === undefined)) return { invalid: 'width and height go together' };
  if (body.width === undefined) return { kind: 'generate', width: 2048, height: 2048 };
  if (!Number.isInteger(body.width) || !Number.isInteger(body.height)) return { invalid: 'width/height must be integers' };
  const area = body.width * body.height;
  if (area < MIN_AREA || area > MAX_AREA) return { invalid: `area ${area} out of range` };
  const minRatio = body.min_ratio ?? 1 / 3;
  const maxRatio = body.max_ratio ?? 3;
  if (minRatio < 1 / 16 || maxRatio >= 16) return { invalid: 'ratio bounds out of range' };
  const ratio = body.width / body.height;
  if (ratio < minRatio || ratio > maxRatio) return { invalid: `ratio ${ratio} outside [${minRatio}, ${maxRatio}]` };
  return { kind: 'generate', width: body.width, height: body.height };
}

/** Base64 inputs (plain, no `data:` prefix), decoded far enough to know their size and bands. */
async function decodeInputs(body: any): Promise<Metadata[] | { invalid: string }> {
  if (!Array.isArray(body.binary_data_base64)) return { invalid: 'binary_data_base64 missing' };
  const metas: Metadata[] = [];
  for (const entry of body.binary_data_base64) {
    if (!nonEmptyString(entry) || entry.startsWith('data:')) return { invalid: 'binary_data_base64 entries must be plain base64' };
    try {
      const meta = await sharp(Buffer.from(entry, 'base64')).metadata();
      if (meta.format !== 'png' && meta.format !== 'jpeg') return { invalid: `input format ${meta.format}` };
      metas.push(meta);
    } catch {
      return { invalid: 'input is not an image' };
    }
  }
  return metas;
}

// ---------------------------------------------------------------------------------------------
// Answers

function submitFault(scenario: string): FakeResponse | null {
  switch (scenario) {
    case 'rate_limit':
      return apiError(429, 50429, 'Request Has Reached API Limit, Please Try Later');
    case 'concurrency':
      return apiError(429, 50430, 'Request Has Reached API Concurrent Limit, Please Try Later');
    case 'server_error':
      return apiError(500, 50500, 'Internal Error');
    case 'bad_gateway':
      return { status: 502, body: '<html><body>502 Bad Gateway</body></html>', headers: { 'content-type': 'text/html' } };
    case 'moderation_submit':
      return apiError(400, 50412, 'Text Risk Not Pass');
    default:
      return null;
  }
}

function envelope(code: number, data: unknown, message = 'Success') {
  return { code, data, message, request_id: randomBytes(12).toString('hex'), status: code, time_elapsed: `${randomInt(5, 200)}.5ms` };
}

function apiError(status: number, code: number, message: string): FakeResponse {
  return { status, json: envelope(code, null, message) };
}

function invalidInput(reason: string): FakeResponse {
  // The real message never says why; the reason rides along for test failures.
  return { status: 400, json: { ...envelope(50215, null, 'Input invalid for this service.'), fake_reason: reason } };
}

function gatewayError(status: number, code: string, message: string): FakeResponse {
  return { status, json: { ResponseMetadata: { RequestId: randomBytes(12).toString('hex'), Error: { Code: code, Message: message } } } };
}

function waiting(status: string) {
  return { status, image_urls: null, binary_data_base64: null };
}

function wantsUrls(reqJson: unknown): boolean {
  if (typeof reqJson !== 'string') return false;
  try {
    return JSON.parse(reqJson)?.return_url === true;
  } catch {
    return false;
  }
}

/** 19 digits, always above 2^53, so a number round trip visibly corrupts it. */
function newTaskId(): string {
  return `7${String(randomInt(0, 1e9)).padStart(9, '0')}${String(randomInt(0, 1e9)).padStart(9, '0')}`;
}

function nonEmptyString(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0;
}
