import { request } from 'undici';
import { ERR } from '../../lib/error-codes.ts';
import { EngineError } from '../engine.ts';
import { Aborted } from '../../lib/abort.ts';

export interface ProviderResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON, or null when the body was empty or not JSON. */
  json: any;
  text: string;
}

export interface ProviderRequest {
  method: 'GET' | 'POST' | 'DELETE';
  url: string;
  headers?: Record<string, string>;
  /** Sent as is: callers that sign the body serialise it once and pass the same string. */
  body?: string;
  timeoutMs: number;
  signal?: AbortSignal;
}

/** Largest provider API answer we read (task objects are a few KB; base64 images are not expected here). */
const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

/**
 * One call to a provider's API (operator-configured base URLs, so no SSRF guard here; result
 * URLs go through the guard). Answers of every status are returned for the adapter to
 * interpret; only transport trouble throws: a retryable EngineError, or Aborted when the
 * caller's signal fired.
 */
export async function callProvider(engine: string, req: ProviderRequest): Promise<ProviderResponse> {
  const timeout = AbortSignal.timeout(req.timeoutMs);
  const signal = req.signal ? AbortSignal.any([req.signal, timeout]) : timeout;
  try {
    const res = await request(req.url, { method: req.method, headers: req.headers, body: req.body, signal });
    const text = await res.body.text();
    if (text.length > MAX_RESPONSE_BYTES) throw new EngineError(ERR.provider_error, `${engine}: answer too large`, { retryable: true });
    let json: any = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    return { status: res.statusCode, headers: res.headers, json, text };
  } catch (error) {
    if (req.signal?.aborted) throw new Aborted();
    if (error instanceof EngineError) throw error;
    const err = error as Error & { code?: string };
    if (timeout.aborted) {
      throw new EngineError(ERR.provider_timeout, `${engine}: no answer within ${req.timeoutMs} ms`, { retryable: true });
    }
    throw new EngineError(ERR.provider_error, `${engine}: ${err.code ?? err.name} ${err.message}`.trim(), { retryable: true });
  }
}

/**
 * `Retry-After` in seconds or as an HTTP date, as milliseconds; undefined when absent or
 * unreadable. `now`: the engine's clock, against which a date is read.
 */
export function retryAfterMs(headers: ProviderResponse['headers'], now: number): number | undefined {
  const value = headers['retry-after'];
  const raw = Array.isArray(value) ? value[0] : value;
  if (!raw) return undefined;
  const seconds = Number(raw);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(raw);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}
