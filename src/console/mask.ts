/** Query parameters that carry a credential in a URL (libpq's `password`/`sslpassword`, S3's presigned `X-Amz-*`, …). */
const SECRET_PARAM = /pass|secret|token|signature|credential|key|auth|sig$|^user(name)?$/i;
const MASK = '****';

/**
 * A value with every credential a URL can carry masked: user and password of `user:pass@`,
 * credential-like query parameters. Anything that looks like a URL or userinfo but does not
 * parse is masked whole (fail closed). A value with nothing to mask comes back as it was.
 */
export function maskCredentials(value: string): string {
  const looksLikeUrl = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) || value.includes('://');
  if (!looksLikeUrl) {
    // `user:pass@host` without a scheme, or a bare `key=value` credential.
    if (/[^\s/@]+:[^\s/@]*@/.test(value) || /(?:^|[?&;\s])[^=&\s]*(?:pass|secret|token|signature|credential)[^=&\s]*=/i.test(value)) return MASK;
    return value;
  }
  let url: URL;
  try {
    url = new URL(value.trim());
  } catch {
    return MASK;
  }
  let masked = false;
  if (url.username) {
    url.username = MASK;
    masked = true;
  }
  if (url.password) {
    url.password = MASK;
    masked = true;
  }
  for (const name of [...new Set(url.searchParams.keys())]) {
    if (SECRET_PARAM.test(name)) {
      url.searchParams.set(name, MASK);
      masked = true;
    }
  }
  if (url.hash && /=|@/.test(url.hash)) {
    url.hash = MASK;
    masked = true;
  }
  // Text around the URL (`draw http://…`) or userinfo a lenient parser kept: hide it all.
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(value.trim()) && /[^\s/@]+:[^\s/@]*@|@/.test(value)) return MASK;
  if (!masked) return value;
  const out = url.toString();
  return /:\/\/[^/]*@/.test(out.replace(`${MASK}:${MASK}@`, '').replace(`${MASK}@`, '')) ? MASK : out;
}

/** A copy of `value` (JSON data) with every string that is a URL masked as above. */
export function maskUrlsIn(value: unknown): unknown {
  if (typeof value === 'string') return /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? maskCredentials(value) : value;
  if (Array.isArray(value)) return value.map(maskUrlsIn);
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, maskUrlsIn(v)]));
  return value;
}
