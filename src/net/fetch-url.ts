/**
 * The one way this service reaches a user-supplied URL (assets by URL, job input images, webhooks).
 *
 * SSRF defence in three layers:
 *  1. `checkUrl` — cheap syntax check at request-validation time; refuses IP literals (any spelling,
 *     the WHATWG parser already normalised them) and `localhost` names that are not public.
 *  2. `guardedDispatcher` — resolves DNS itself and connects only to an address it just checked, so
 *     a hostname cannot pass a check with one answer and then connect to another (DNS rebinding).
 *  3. Redirects are followed by hand, every hop going through 1 and 2 again.
 * Errors are `FetchError`s whose messages name the host and the reason, never a stack or a full URL.
 */
import { createHash } from 'node:crypto';
import dns from 'node:dns';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import ipaddr from 'ipaddr.js';
import { Agent, buildConnector, request, type Dispatcher } from 'undici';
import { ERR, type FetchErrorCode } from '../lib/error-codes.ts';
import { AppError } from '../lib/errors.ts';

/** An AppError (so the API layer maps it like any domain error) carrying the upstream status for http_status. */
export class FetchError extends AppError {
  constructor(
    override readonly code: FetchErrorCode,
    message: string,
    readonly status?: number,
  ) {
    super(code, message);
  }
}

export interface GuardOptions {
  allowPrivate: boolean;
}

export interface FetchOptions extends GuardOptions {
  maxBytes: number;
  timeoutMs?: number /* cap on the whole transfer, redirects and body included; default 30000 */;
  maxRedirects?: number /* default 5 */;
  signal?: AbortSignal;
  headers?: Record<string, string>;
}

const MAX_URL_LENGTH = 2048;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/** `[::1]` → `::1`, `example.test.` → `example.test`: the forms the checks compare against. */
function bareHost(hostname: string): string {
  const h = hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
  return h.replace(/\.$/, '').toLowerCase();
}

function notPublic(address: string, host: string): FetchError {
  const of = bareHost(host) === address ? '' : ` of ${host}`;
  return new FetchError(ERR.url_forbidden, `address ${address}${of} is not public`);
}

export function checkUrl(raw: string, opts: GuardOptions): URL {
  if (typeof raw !== 'string' || raw.length > MAX_URL_LENGTH) {
    throw new FetchError(ERR.url_invalid, `must be a string of at most ${MAX_URL_LENGTH} characters`);
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new FetchError(ERR.url_invalid, 'is not an absolute URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new FetchError(ERR.url_invalid, `scheme ${url.protocol} is not allowed, only http: and https:`);
  }
  if (!url.hostname) throw new FetchError(ERR.url_invalid, 'has no host');
  // Credentials in URLs end up in logs and would be replayed to whatever a redirect points at.
  if (url.username || url.password) throw new FetchError(ERR.url_invalid, `credentials in the URL are not allowed (${url.hostname})`);
  if (!opts.allowPrivate) {
    const host = bareHost(url.hostname);
    if (net.isIP(host)) {
      if (!isPublicAddress(host)) throw notPublic(host, url.hostname);
    } else if (host === 'localhost' || host.endsWith('.localhost')) {
      throw new FetchError(ERR.url_forbidden, `host ${host} is not public`);
    }
  }
  return url;
}

const GLOBAL_UNICAST_V6 = ipaddr.parseCIDR('2000::/3');
const NAT64_WELL_KNOWN = ipaddr.parseCIDR('64:ff9b::/96');

function v4FromWords(hi: number, lo: number): ipaddr.IPv4 {
  return new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
}

export function isPublicAddress(address: string): boolean {
  const a = bareHost(address.trim());
  if (!ipaddr.isValid(a)) return false;
  const ip = ipaddr.parse(a);
  // ipaddr names every special-purpose IPv4 block; only the leftover 'unicast' is routable on the internet.
  if (ip.kind() === 'ipv4') return ip.range() === 'unicast';
  const v6 = ip as ipaddr.IPv6;
  const p = v6.parts;
  const range = v6.range();
  if (range === 'unspecified' || range === 'loopback') return false;
  // Forms that carry an IPv4 address reach whatever that IPv4 is, so judge the IPv4 instead.
  // ::a.b.c.d (compatible), ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d (rfc6145), 64:ff9b::a.b.c.d (NAT64).
  if (range === 'ipv4Mapped' || range === 'rfc6145' || p.slice(0, 6).every((w) => w === 0) || v6.match(NAT64_WELL_KNOWN)) {
    return v4FromWords(p[6]!, p[7]!).range() === 'unicast';
  }
  if (range === '6to4') return v4FromWords(p[1]!, p[2]!).range() === 'unicast';
  if (range === 'teredo') {
    // Server address in clear, client address obfuscated by XOR with all ones (RFC 4380).
    const server = v4FromWords(p[2]!, p[3]!);
    const client = v4FromWords(p[6]! ^ 0xffff, p[7]! ^ 0xffff);
    return server.range() === 'unicast' && client.range() === 'unicast';
  }
  // Everything else special (unique-local incl. fd00:ec2::254, link-local, multicast, documentation,
  // local-use NAT64 64:ff9b:1::/48...) is refused, and so is anything outside the global unicast block.
  return range === 'unicast' && v6.match(GLOBAL_UNICAST_V6);
}

/**
 * DNS lookup for net.connect that drops non-public answers. Node 20 calls it with `all: true` when
 * autoSelectFamily is on (the default) and expects an array back; otherwise one address + family.
 */
export function guardedLookup(opts: GuardOptions): net.LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, options.all ? [] : '', undefined);
      const allowed = opts.allowPrivate ? addresses : addresses.filter((a) => isPublicAddress(a.address));
      const first = allowed[0];
      if (!first) {
        const refused = addresses[0] ? notPublic(addresses[0].address, hostname) : new FetchError(ERR.fetch_failed, `${hostname} did not resolve to any address`);
        return callback(refused, options.all ? [] : '', undefined);
      }
      if (options.all) callback(null, allowed);
      else callback(null, first.address, first.family);
    });
  };
}

const dispatchers = new Map<boolean, Dispatcher>();

export function guardedDispatcher(opts: GuardOptions): Dispatcher {
  const allowPrivate = opts.allowPrivate;
  let agent = dispatchers.get(allowPrivate);
  if (!agent) {
    const connectChecked = buildConnector({ lookup: guardedLookup({ allowPrivate }), timeout: 10_000 });
    agent = new Agent({
      connect: (options, callback) => {
        // net.connect never calls lookup for an IP literal, so those are checked here — in case anyone
        // dispatches a URL that did not go through checkUrl.
        const host = bareHost(options.hostname);
        if (!allowPrivate && net.isIP(host) && !isPublicAddress(host)) return callback(notPublic(host, host), null);
        connectChecked(options, callback);
      },
    });
    dispatchers.set(allowPrivate, agent);
  }
  return agent;
}

/** Resolves a redirect's Location against the current URL and re-runs the whole URL check on it. */
export function nextHop(from: URL, location: string | undefined, opts: GuardOptions): URL {
  if (!location) throw new FetchError(ERR.fetch_failed, `${from.host} sent a redirect without a Location`);
  let target: string;
  try {
    target = new URL(location, from).href;
  } catch {
    throw new FetchError(ERR.url_invalid, `${from.host} redirected to an invalid URL`);
  }
  try {
    return checkUrl(target, opts);
  } catch (err) {
    if (!(err instanceof FetchError)) throw err;
    throw new FetchError(err.code, `redirect from ${from.host} refused: ${err.message}`);
  }
}

function header(headers: Record<string, string | string[] | undefined>, name: string): string | null {
  const v = headers[name];
  return (Array.isArray(v) ? v[0] : v) ?? null;
}

/** Turns whatever undici or a signal threw into our vocabulary; a caller's abort passes through untouched. */
function failure(err: unknown, url: URL, caller: AbortSignal | undefined, timeout: AbortSignal, timeoutMs: number): unknown {
  if (caller?.aborted) return caller.reason ?? err;
  if (timeout.aborted) return new FetchError(ERR.timeout, `${url.host} did not finish within ${timeoutMs} ms`);
  if (err instanceof FetchError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new FetchError(ERR.fetch_failed, `could not resolve ${url.hostname}`);
  return new FetchError(ERR.fetch_failed, `could not fetch from ${url.host}${typeof code === 'string' ? ` (${code})` : ''}`);
}

export async function openUrl(
  url: string,
  opts: FetchOptions,
): Promise<{ body: Readable; finalUrl: string; status: number; contentType: string | null; contentLength: number | null }> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const maxRedirects = opts.maxRedirects ?? 5;
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  const dispatcher = guardedDispatcher(opts);
  const first = checkUrl(url, opts);
  let current = first;
  for (let hop = 0; ; hop++) {
    // Caller headers may carry secrets meant for the original origin only; never replay them elsewhere.
    const headers = current.origin === first.origin ? opts.headers : undefined;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(current, { method: 'GET', dispatcher, signal, headers });
    } catch (err) {
      throw failure(err, current, opts.signal, timeout, timeoutMs);
    }
    const status = res.statusCode;
    if (REDIRECT_STATUSES.has(status)) {
      discard(res.body);
      if (hop >= maxRedirects) throw new FetchError(ERR.too_many_redirects, `more than ${maxRedirects} redirects, last from ${current.host}`);
      current = nextHop(current, header(res.headers, 'location') ?? undefined, opts);
      continue;
    }
    if (status < 200 || status > 299) {
      discard(res.body);
      throw new FetchError(ERR.http_status, `${current.host} answered HTTP ${status}`, status);
    }
    const declared = header(res.headers, 'content-length');
    const contentLength = declared !== null && /^\d+$/.test(declared) ? Number(declared) : null;
    if (contentLength !== null && contentLength > opts.maxBytes) {
      discard(res.body);
      throw tooLarge(current, opts.maxBytes);
    }
    const body = limitBody(res.body, opts.maxBytes, current, (err) => failure(err, current, opts.signal, timeout, timeoutMs));
    return { body, finalUrl: current.href, status, contentType: header(res.headers, 'content-type'), contentLength };
  }
}

/** Drops a body we will not read; undici reports that as an abort error, which nobody needs to hear. */
function discard(body: Readable): void {
  body.on('error', () => {});
  body.destroy();
}

function tooLarge(url: URL, maxBytes: number): FetchError {
  return new FetchError(ERR.too_large, `${url.host} sent more than ${maxBytes} bytes`);
}

/** Counts bytes as they pass and fails the stream past the cap; Content-Length can lie or be absent. */
function limitBody(src: Readable, maxBytes: number, url: URL, mapError: (err: unknown) => unknown): Readable {
  let seen = 0;
  const out = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > maxBytes) cb(tooLarge(url, maxBytes));
      else cb(null, chunk);
    },
  });
  src.on('error', (err) => out.destroy(mapError(err) as Error));
  // The cap can trip before the caller starts reading; without a listener that would crash the process.
  // The error stays on the stream (`errored`), so a later pipeline / for-await still rejects with it.
  out.on('error', () => {});
  // However `out` ends (refused, consumer gave up, done), release the upstream socket.
  out.on('close', () => src.destroy());
  src.pipe(out);
  return out;
}

export async function downloadToFile(url: string, path: string, opts: FetchOptions): Promise<{ bytes: number; sha256: string; contentType: string | null; finalUrl: string }> {
  const res = await openUrl(url, opts);
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    await pipeline(
      res.body,
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          hash.update(chunk);
          bytes += chunk.length;
          yield chunk;
        }
      },
      createWriteStream(path),
    );
  } catch (err) {
    // Only the file this call created is removed: nothing is written before openUrl succeeds.
    await rm(path, { force: true });
    throw err;
  }
  return { bytes, sha256: hash.digest('hex'), contentType: res.contentType, finalUrl: res.finalUrl };
}
