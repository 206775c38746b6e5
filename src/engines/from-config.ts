import type { Config } from '../config/index.ts';
import type { Engine } from './engine.ts';
import { createLocalEngine } from './local/index.ts';
import { createEvolinkEngine } from './providers/evolink.ts';
import { createJimengEngine } from './providers/jimeng.ts';
import { createSeedanceEngine } from './providers/seedance.ts';

/** The local engine, plus every remote engine whose credentials are configured. */
export function enginesFromConfig(config: Config): Engine[] {
  const { providers } = config;
  const common = { httpTimeoutMs: providers.httpTimeoutMs, pollIntervalMs: providers.pollIntervalMs ?? undefined };
  const engines: Engine[] = [createLocalEngine()];
  if (providers.jimeng) {
    const { securityToken, ...jimeng } = providers.jimeng;
    engines.push(createJimengEngine({ ...jimeng, ...common, securityToken: securityToken ?? undefined, maxInputPixels: config.maxInputPixels }));
  }
  if (providers.evolink) engines.push(createEvolinkEngine({ ...providers.evolink, ...common }));
  if (providers.seedance) {
    engines.push(createSeedanceEngine({ ...providers.seedance, ...common, jobTimeoutSeconds: Math.round(config.jobTimeoutMs / 1000) }));
  }
  return engines;
}
