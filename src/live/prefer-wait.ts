import type { FastifyReply, FastifyRequest } from 'fastify';
import { isTerminal, type Job } from '../contract/index.ts';
import type { LiveStatus, ReadJob } from './live-status.ts';
import { watchJob } from './watch.ts';

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
 * `Prefer: wait=N`: the job once it is terminal, or as it is after N seconds, whichever comes
 * first (also when the client hangs up meanwhile). Change notices come from the instance's feed;
 * between them nothing is read, so no database connection is held while waiting.
 */
export async function waitForEnd(live: LiveStatus, request: FastifyRequest, reply: FastifyReply, job: Job, read: ReadJob): Promise<Job> {
  const seconds = preferredWait(request.headers.prefer);
  if (seconds === null) return job;
  reply.header('preference-applied', `wait=${seconds}`);
  if (isTerminal(job.status)) return job;
  let latest = job;
  let release = () => {};
  const done = new Promise<void>((resolve) => (release = resolve));
  const watch = await watchJob(
    live.feed,
    job.id,
    read,
    (state) => {
      latest = state.job;
      if (isTerminal(latest.status)) release();
    },
    (error) => {
      request.log.warn({ err: error }, 'reading a waited-for job failed; answering with what was read');
      release();
    },
  );
  if (watch.first) latest = watch.first.job;
  const timer = setTimeout(release, seconds * 1000);
  const hungUp = () => release();
  reply.raw.once('close', hungUp);
  try {
    if (!isTerminal(latest.status)) await done;
  } finally {
    clearTimeout(timer);
    reply.raw.off('close', hungUp);
    watch.stop();
  }
  return latest;
}
