import type { FastifyInstance } from 'fastify';
import type { Store } from '../../assets/index.ts';
import { pingDb, type Db } from '../../db/index.ts';
import { CAPABILITIES, type Capability } from '../../contract/index.ts';
import type { EngineRegistry } from '../../engines/registry.ts';
import { FIELDS_FOR } from '../../jobs/index.ts';
import { buildOpenApi, capabilityParams } from '../openapi.ts';

const DESCRIPTIONS: Record<Capability, string> = {
  'image.generate': '图片生成: an image from a prompt, optionally guided by reference images',
  'image.inpaint': '局部重绘: repaint the white area of a mask over the original image',
  'image.upscale': '智能超清: enlarge an image to a 2k/4k/8k long side',
  'video.generate': 'Seedance 视频生成: a video from a prompt and/or image materials',
};
const INPUT_FIELDS = ['prompt', 'inputAssetIds', 'inputUrls', 'imageUrls', 'materials'];

export function registerMetaRoutes(app: FastifyInstance, deps: { db: Db; store: Store; engines: EngineRegistry; baseUrl: () => string }): void {
  let openapi: object | null = null;
  app.get('/api/v1/openapi.json', { config: { access: 'public' } }, async () => (openapi ??= buildOpenApi(deps.baseUrl())));

  app.get('/api/v1/capabilities', async () => ({
    capabilities: CAPABILITIES.map((capability) => ({
      capability,
      description: DESCRIPTIONS[capability],
      engines: deps.engines.namesFor(capability),
      params: capabilityParams([...INPUT_FIELDS, ...FIELDS_FOR[capability]]),
    })),
  }));

  app.get('/healthz', { config: { access: 'public' } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { config: { access: 'public' } }, async (_request, reply) => {
    const checks = await Promise.allSettled([pingDb(deps.db), deps.store.check()]);
    const [database, storage] = checks.map((c) => (c.status === 'fulfilled' ? 'ok' : 'unavailable'));
    const ready = database === 'ok' && storage === 'ok';
    return reply.status(ready ? 200 : 503).send({ status: ready ? 'ok' : 'unavailable', database, storage });
  });
}
