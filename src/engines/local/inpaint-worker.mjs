// Worker thread for image.inpaint: OpenCV's Telea inpainting (photo module of @techstark/opencv-js).
// Plain JavaScript so it loads without tsx. OpenCV.js is synchronous WASM, so it runs here, off the
// main event loop; the parent cancels a job by terminating this worker.
//
// Messages in:  { id, width, height, channels: 1 | 3, data: Uint8Array, mask: Uint8Array,
//                 alpha?: Uint8Array, radius }
// Messages out: { type: 'ready', loadMs } once; then { id, ok: true, data, alpha?, heapBytes }
//               or { id, ok: false, error }.
import { parentPort } from 'node:worker_threads';

const started = performance.now();
const mod = await import('@techstark/opencv-js');
const cv = mod.default ?? mod;

// The module object is a thenable whose promise is unreliable; poll for the runtime instead.
// Real time (Date.now()): a limit on how long this thread waits for WASM, which no injected clock
// of the parent's can move; the thread has no other notion of time.
await new Promise((resolve, reject) => {
  const deadline = Date.now() + 60_000;
  const check = () => {
    if (cv.Mat) {
      if (typeof cv.inpaint !== 'function') return reject(new Error('this OpenCV.js build has no cv.inpaint (photo module)'));
      return resolve();
    }
    if (Date.now() > deadline) return reject(new Error('OpenCV.js did not initialise within 60 s'));
    setTimeout(check, 5);
  };
  check();
});

function inpaintPlane(width, height, type, bytes, maskMat, radius) {
  const src = new cv.Mat(height, width, type);
  const dst = new cv.Mat();
  try {
    src.data.set(bytes);
    cv.inpaint(src, maskMat, dst, radius, cv.INPAINT_TELEA);
    return new Uint8Array(dst.data); // a copy out of the WASM heap
  } finally {
    src.delete();
    dst.delete();
  }
}

function errorText(err) {
  if (typeof err === 'number' && typeof cv.exceptionFromPtr === 'function') {
    try {
      return String(cv.exceptionFromPtr(err).msg);
    } catch {
      // fall through
    }
  }
  return err instanceof Error ? err.message : String(err);
}

parentPort.on('message', (msg) => {
  const { id, width, height, channels, data, mask, alpha, radius } = msg;
  let maskMat = null;
  try {
    maskMat = new cv.Mat(height, width, cv.CV_8UC1);
    maskMat.data.set(mask);
    const type = channels === 3 ? cv.CV_8UC3 : cv.CV_8UC1;
    const out = inpaintPlane(width, height, type, data, maskMat, radius);
    const outAlpha = alpha ? inpaintPlane(width, height, cv.CV_8UC1, alpha, maskMat, radius) : undefined;
    const transfer = [out.buffer];
    if (outAlpha) transfer.push(outAlpha.buffer);
    parentPort.postMessage({ id, ok: true, data: out, alpha: outAlpha, heapBytes: cv.HEAPU8 ? cv.HEAPU8.byteLength : 0 }, transfer);
  } catch (err) {
    parentPort.postMessage({ id, ok: false, error: errorText(err) });
  } finally {
    if (maskMat) maskMat.delete();
  }
});

parentPort.postMessage({ type: 'ready', loadMs: Math.round(performance.now() - started) });
