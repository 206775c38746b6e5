import { PassThrough } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { isTerminal } from '../contract/index.ts';
import { NotFound, RateLimited } from '../lib/errors.ts';
import { visibleState, watchJob, type LiveStatus, type ReadJob, type WatchedJob } from '../live/index.ts';

/** How long an EventSource waits before it reconnects (sent once, as `retry:`). */
const RECONNECT_MS = 2_000;
/** Seconds a client over its stream limit is asked to wait. */
const STREAMS_RETRY_AFTER_SECONDS = 5;

export interface JobStreamOptions {
  /** Whose streams these are, for the per-owner limit (`api:<client>`, `console:<user>`). */
  owner: string;
  /** The jobs watched: one (the job's event stream) or several (the console's running rows). */
  jobs: { id: string; read: ReadJob }[];
  /** A single job's stream resumes after this version (Last-Event-ID). */
  lastEventId: number | null;
}

/**
 * A `text/event-stream` answer: an event `job` (data: the job JSON, `id:` its version) at once and
 * whenever its status, progress or statusDetail changes, a `: keep-alive` comment every
 * `keepAliveMs`, and the end once every watched job has sent its terminal event.
 * - Last-Event-ID: the current state is sent at once only when it is newer than that version;
 *   a job that is terminal and already seen gets 204, which tells an EventSource to stop
 *   reconnecting (as does a list of jobs none of which exists).
 * - A single job that is gone (or not the caller's) is a 404, before anything is streamed.
 * The answer goes through `reply.send(stream)`, so the request log, the hooks and the error
 * handler see it as any other; the client hanging up (or the server shutting down) ends it and
 * drops its subscriptions and timer.
 */
export async function sendJobStream(live: LiveStatus, request: FastifyRequest, reply: FastifyReply, opts: JobStreamOptions): Promise<FastifyReply> {
  const open = live.open.get(opts.owner) ?? 0;
  if (open >= live.maxStreamsPerClient) {
    throw new RateLimited(STREAMS_RETRY_AFTER_SECONDS, `Too many open event streams (at most ${live.maxStreamsPerClient} per client on one server); close one first.`);
  }
  live.open.set(opts.owner, open + 1);

  const stream = new PassThrough();
  /** Per job: the version and the visible state last sent (or, resuming, last seen by the client). */
  const lastSent = new Map<string, { version: number; shown: string }>();
  /** Jobs not yet terminal: the stream ends when none is left. */
  const pending = new Set<string>();
  const watches: { stop(): void }[] = [];
  let ended = false;
  let keepAlive: NodeJS.Timeout | null = null;

  const finish = () => {
    if (ended) return;
    ended = true;
    for (const w of watches) w.stop();
    if (keepAlive) clearInterval(keepAlive);
    live.closers.delete(end);
    const left = (live.open.get(opts.owner) ?? 1) - 1;
    if (left > 0) live.open.set(opts.owner, left);
    else live.open.delete(opts.owner);
  };
  const end = () => {
    finish();
    if (!stream.writableEnded) stream.end();
  };
  const send = (id: string, state: WatchedJob) => {
    const before = lastSent.get(id);
    // A watch may report a newer state before the first one went out (several jobs): never go back.
    if (ended || (before && state.version <= before.version)) return;
    const shown = visibleState(state.job);
    const terminal = isTerminal(state.job.status);
    lastSent.set(id, { version: state.version, shown });
    if (before?.shown !== shown) {
      stream.write(`event: job\nid: ${state.version}\ndata: ${JSON.stringify(state.job)}\n\n`);
    }
    if (terminal) {
      pending.delete(id);
      if (pending.size === 0) end();
    }
  };
  const failed = (error: unknown) => {
    request.log.warn({ err: error }, 'reading a watched job failed; the event stream ends');
    end();
  };

  const firsts: (WatchedJob | null)[] = [];
  try {
    for (const job of opts.jobs) {
      pending.add(job.id);
      const watch = await watchJob(live.feed, job.id, job.read, (state) => send(job.id, state), failed);
      watches.push(watch);
      firsts.push(watch.first);
    }
  } catch (error) {
    finish();
    throw error;
  }
  const single = opts.jobs.length === 1 ? firsts[0] : undefined;
  if (single === null) {
    finish();
    throw new NotFound('Job');
  }
  // Nothing to follow (a terminal job already seen; none of several jobs exists): 204 stops an EventSource.
  const nothing = firsts.every((first) => first === null);
  if (nothing || (single && opts.lastEventId !== null && single.version <= opts.lastEventId && isTerminal(single.job.status))) {
    finish();
    return reply.status(204).send();
  }

  live.closers.add(end);
  stream.on('close', finish);
  reply.raw.on('close', end);
  // The client may have hung up while the jobs were read: its 'close' has come and gone.
  if (reply.raw.destroyed) end();
  keepAlive = setInterval(() => stream.write(': keep-alive\n\n'), live.keepAliveMs);
  keepAlive.unref();
  reply.header('content-type', 'text/event-stream; charset=utf-8').header('cache-control', 'no-cache').header('x-accel-buffering', 'no');
  stream.write(`retry: ${RECONNECT_MS}\n\n`);
  opts.jobs.forEach((job, i) => {
    const first = firsts[i];
    if (!first) return void pending.delete(job.id);
    if (lastSent.has(job.id)) return; // a newer state already went out
    // Resuming: what the client saw is not sent again; the next change will be.
    if (single && opts.lastEventId !== null && first.version <= opts.lastEventId) return void lastSent.set(job.id, { version: first.version, shown: visibleState(first.job) });
    send(job.id, first);
  });
  if (pending.size === 0) end();
  return reply.send(stream);
}
