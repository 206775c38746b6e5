/**
 * Conditional and partial downloads (RFC 9110 §13 and §14). Everything a client cannot have
 * meant — an unknown unit, a malformed or backwards range — is ignored, as the RFC says, and
 * the whole file is sent.
 */

/**
 * Parses a `Range` header for one byte range (§14.1.2). Several ranges are answered with the
 * whole file, which the RFC allows. Returns null for "send everything" and 'unsatisfiable'
 * when the range is valid but no byte of it exists.
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null | 'unsatisfiable' {
  if (!header) return null;
  // The unit is case-insensitive; white space is allowed around the range-spec (OWS).
  const m = /^bytes=[ \t]*(\d*)-(\d*)[ \t]*$/i.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  // "last-pos … less than first-pos: the range-spec is invalid" (§14.1.1): ignored, not 416.
  if (m[2] !== '' && Number(m[2]) < start) return null;
  if (start >= size) return 'unsatisfiable';
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  return { start, end };
}

/**
 * True when `If-None-Match` matches our entity tag (§13.1.2): `*`, or any tag of the list
 * under the weak comparison (a `W/` prefix is ignored), so the answer is 304.
 */
export function ifNoneMatchHits(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  if (header.trim() === '*') return true;
  return header.split(',').some((tag) => tag.trim().replace(/^W\//, '') === etag);
}
