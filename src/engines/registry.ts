import type { Capability, Engine } from './engine.ts';

/** The engines this deployment can run, in preference order per capability. */
export interface EngineRegistry {
  get(name: string): Engine | undefined;
  /** The engine a job runs on when it names none. */
  defaultFor(capability: Capability): Engine | undefined;
  namesFor(capability: Capability): string[];
  all(): Engine[];
}

export function createEngineRegistry(engines: Engine[]): EngineRegistry {
  const byName = new Map(engines.map((e) => [e.name, e]));
  const supporting = (capability: Capability) => engines.filter((e) => e.capabilities.includes(capability));
  return {
    get: (name) => byName.get(name),
    defaultFor: (capability) => supporting(capability)[0],
    namesFor: (capability) => supporting(capability).map((e) => e.name),
    all: () => [...engines],
  };
}
