import { z } from 'zod';
import { ASSET_KINDS } from '../contract/index.ts';

export const registerAssetBodySchema = z
  .object({
    url: z.string().max(2048).describe('http(s) URL; fetched once, size- and SSRF-checked'),
    name: z.string().min(1).max(255).optional(),
    kind: z.enum(ASSET_KINDS).optional().describe('Asserted kind; must match the content'),
  })
  .strict();

export const listAssetsQuerySchema = z
  .object({
    kind: z.enum(ASSET_KINDS).optional(),
    limit: z.coerce.number().int().min(1).max(200).optional().describe('1–200, default 20'),
    before: z.string().optional().describe('ISO time (exclusive); pass nextBefore to get the next page'),
  })
  .strict();
