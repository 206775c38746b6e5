// Child process for the local engine's sharp (libvips) pipelines. libvips work cannot be
// interrupted from JavaScript, and terminating a worker thread does not stop its native threads,
// so long pipelines run here and the parent cancels one by SIGKILLing this process.
// Plain JavaScript so it starts without tsx. One task at a time.
//
// Messages in:  { id, task } — task = { input, inputOptions?, ops: [[method, ...args]], output }
//   input:  { kind: 'file', path } | { kind: 'svg', svg } |
//           { kind: 'rawFile', path, width, height, channels }   (raw 8-bit pixels in a file)
//   ops:    sharp method calls with plain-data arguments (see sharp-task.mjs).
//   output: { path } — an encoded file (format from the ops) — or { rawPath } — the 8-bit pixels.
// Messages out: { type: 'ready', loadMs } once; then for each task
//               { id, ok: true, info: { width, height, channels, size }, rss }
//               or { id, ok: false, error, rss }.

// Die with the parent: a closed IPC channel means it exited or was killed. SIGKILL, because a
// pipeline may still be running on libvips threads.
process.on('disconnect', () => process.kill(process.pid, 'SIGKILL'));

const started = performance.now();
// Listen before sharp is loaded, so that no task sent early is lost.
const loaded = Promise.all([import('./sharp-task.mjs'), import('sharp'), import('node:fs/promises')]).then(([task, sharpModule, fs]) => {
  // Nothing is shared between tasks: no cached operations, no input files held open.
  (sharpModule.default ?? sharpModule).cache(false);
  return { buildPipeline: task.buildPipeline, readFile: fs.readFile, writeFile: fs.writeFile };
});

async function run(task) {
  const { buildPipeline, readFile, writeFile } = await loaded;
  const { input, inputOptions, ops, output } = task;
  let source;
  if (input.kind === 'file') source = input.path;
  else if (input.kind === 'svg') source = { svg: input.svg };
  else if (input.kind === 'rawFile') source = { raw: await readFile(input.path), width: input.width, height: input.height, channels: input.channels };
  else throw new Error(`unknown input kind ${String(input.kind)}`);
  const pipeline = buildPipeline(source, inputOptions, ops);
  if (output.rawPath) {
    const { data, info } = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    await writeFile(output.rawPath, data);
    return { width: info.width, height: info.height, channels: info.channels, size: data.length };
  }
  const info = await pipeline.toFile(output.path);
  return { width: info.width, height: info.height, channels: info.channels, size: info.size };
}

/** Replies; a parent that is already gone (EPIPE) is no error: 'disconnect' ends this process. */
function reply(message) {
  if (process.connected) process.send(message, () => undefined);
}

process.on('message', async (msg) => {
  const { id, task } = msg ?? {};
  try {
    const info = await run(task);
    reply({ id, ok: true, info, rss: process.memoryUsage.rss() });
  } catch (err) {
    reply({ id, ok: false, error: err instanceof Error ? err.message : String(err), rss: process.memoryUsage.rss() });
  }
});

await loaded;
reply({ type: 'ready', loadMs: Math.round(performance.now() - started) });
