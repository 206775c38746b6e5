import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Job } from '../contract/index.ts';
import { waitUntilTerminal, type LiveStatus, type ReadJob } from '../live/index.ts';

const MAX_WAIT_SECONDS = 60;

/**
 * The `wait=N` preference of a `Prefer` header (RFC 7240), N 1–60; null when absent or not a
 * value we honour (then the preference is ignored, as the RFC says, and not reported applied).
 */
function preferredWait(header: string | string[] | undefined): number | null {
  if (header === undefined) return null;
  for (const part of (Array.isArray(header) ? header : [header]).flatMap((h) => h.split(','))) {
    const [token = ''] = part.split(';');
    const m = /^\s*wait\s*=\s*"?(\d{1,3})"?\s*$/i.exec(token);
    if (!m) continue;
    const n = Number(m[1]);
    return n >= 1 && n <= MAX_WAIT_SECONDS ? n : null;
  }
  return null;
}

/**
 * `Prefer: wait=N` (CONTRACT "Live status"): the job once it is terminal, or as it is after N
 * seconds, whichever comes first (or when the client hangs up), with `Preference-Applied`.
 * Without a valid preference: the job as given, at once.
 */
export async function waitForEnd(live: LiveStatus, request: FastifyRequest, reply: FastifyReply, job: Job, read: ReadJob): Promise<Job> {
  const seconds = preferredWait(request.headers.prefer);
  if (seconds === null) return job;
  reply.header('preference-applied', `wait=${seconds}`);
  const hungUp = new AbortController();
  const abort = () => hungUp.abort();
  reply.raw.once('close', abort);
  if (reply.raw.destroyed) abort(); // hung up already
  try {
    return await waitUntilTerminal(live.feed, job, read, seconds * 1000, hungUp.signal, (error) =>
      request.log.warn({ err: error }, 'reading a waited-for job failed; answering with what was read'),
    );
  } finally {
    reply.raw.off('close', abort);
  }
}
