/**
 * The offline engine: real media made on this machine, no network. Images are drawn from the
 * prompt (SVG via sharp), upscaled with lanczos3, inpainted with OpenCV (Telea, in a worker), and
 * videos are encoded by ffmpeg (libx264). Long sharp pipelines run in a child process and ffmpeg
 * is one, so a cancel kills the work itself (see sharp-child.ts).
 */
import { ERR } from '../../lib/error-codes.ts';
import { EngineError, type LocalEngine, type EngineOutput, type EngineRequest, type RunContext } from '../engine.ts';
import { CAPABILITIES } from '../../contract/index.ts';
import { Aborted } from '../../lib/abort.ts';
import { generateImage } from './image-generate.ts';
import { inpaintImage } from './image-inpaint.ts';
import { upscaleImage } from './image-upscale.ts';
import { generateVideo } from './video-generate.ts';

export { prewarmInpaint, shutdownInpaint } from './inpaint-pool.ts';
export { prewarmSharp, shutdownSharp } from './sharp-child.ts';

export function createLocalEngine(): LocalEngine {
  return {
    name: 'local',
    capabilities: CAPABILITIES,
    async run(request: EngineRequest, ctx: RunContext): Promise<EngineOutput[]> {
      try {
        switch (request.capability) {
          case 'image.generate':
            return await generateImage(request, ctx);
          case 'image.upscale':
            return await upscaleImage(request, ctx);
          case 'image.inpaint':
            return await inpaintImage(request, ctx);
          case 'video.generate':
            return await generateVideo(request, ctx);
          default:
            throw new EngineError(ERR.unsupported, `The local engine cannot run ${String(request.capability)}.`);
        }
      } catch (err) {
        // Whatever failed after a cancel is the cancel.
        if (ctx.signal.aborted && !(err instanceof Aborted)) throw new Aborted();
        throw err;
      }
    },
  };
}
