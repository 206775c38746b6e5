import type { Engine } from './engine.ts';
import type { Capability } from '../contract/index.ts';

/** The engines this deployment can run, in preference order per capability. */
export interface EngineRegistry {
  get(name: string): Engine | undefined;
  /** The engine a job runs on when it names none. */
  defaultFor(capability: Capability): Engine | undefined;
  /** Available engines for a capability, most preferred first (what `/capabilities` lists). */
  namesFor(capability: Capability): string[];
  /** Where a job that could not start on `current` goes next, if anywhere. */
  nextAfter(capability: Capability, current: string): Engine | undefined;
  all(): Engine[];
}

/**
 * `preference` lists engine names per capability (`ZHINIAN_ENGINES_<CAPABILITY>`); names not
 * available here are skipped. Without a list, remote engines come first in the order given
 * and `local` only serves capabilities no remote engine offers: a deployment with provider
 * credentials means real AI output, and falling back to the offline engine must be asked for.
 */
export function createEngineRegistry(engines: Engine[], preference: Partial<Record<Capability, string[]>> = {}): EngineRegistry {
  const byName = new Map(engines.map((e) => [e.name, e]));
  const order = (capability: Capability): Engine[] => {
    const listed = preference[capability];
    if (listed) return listed.map((n) => byName.get(n)).filter((e): e is Engine => !!e && e.capabilities.includes(capability));
    const supporting = engines.filter((e) => e.capabilities.includes(capability));
    const remote = supporting.filter((e) => e.kind === 'remote');
    return remote.length > 0 ? remote : supporting;
  };
  return {
    get: (name) => byName.get(name),
    defaultFor: (capability) => order(capability)[0],
    namesFor: (capability) => order(capability).map((e) => e.name),
    nextAfter(capability, current) {
      const list = order(capability);
      const at = list.findIndex((e) => e.name === current);
      return at === -1 ? undefined : list[at + 1];
    },
    all: () => [...engines],
  };
}
