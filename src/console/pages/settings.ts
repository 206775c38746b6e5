import type { FastifyInstance } from 'fastify';
import { type Config, ENV_VARS, loadConfig } from '../../config/index.ts';
import type { ConsoleDeps } from '../deps.ts';
import { maskCredentials } from '../mask.ts';
import type { Render } from '../render.ts';

export { maskCredentials };

/** Variables whose values are secrets: shown only as set or unset. */
const SECRET_VAR = /SECRET|PASSWORD|API_KEY|ACCESS_KEY|TOKEN|CREDENTIAL/;

/** The unit of a variable, from the suffix its name ends with (the env schema's convention). */
const UNITS: [suffix: string, unit: string][] = [
  ['_SECONDS', 'seconds'],
  ['_MS', 'ms'],
  ['_BYTES', 'bytes'],
  ['_PER_MINUTE', 'perMinute'],
  ['_PIXELS', 'pixels'],
];

export interface SettingRow {
  /** The environment variable an operator sets. */
  name: string;
  /** Where it lands in the effective configuration (for the curious), '' if nowhere visible. */
  path: string;
  /** Unit key (`settings.unit.<unit>`), '' for none. */
  unit: string;
  /** Display value, in the variable's own unit; null for a secret or a section not in use. */
  value: string | null;
  secret: boolean;
  set: boolean;
  /** The section this variable belongs to is off (e.g. a provider without credentials). */
  inactive: boolean;
}

type Leaves = Map<string, unknown>;

/** Every leaf of a configuration (arrays are leaves), by dotted path. */
function leaves(value: unknown, prefix = '', out: Leaves = new Map()): Leaves {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) leaves(v, prefix ? `${prefix}.${k}` : k, out);
    if (prefix && Object.keys(value).length === 0) out.set(prefix, value);
    return out;
  }
  if (prefix) out.set(prefix, value);
  return out;
}

/** Turns on every optional section, so that probing a variable of one shows where it lands. */
const PROBE_BASE: Record<string, string> = {
  ZHINIAN_S3_BUCKET: 'probe-bucket',
  ZHINIAN_S3_ACCESS_KEY_ID: 'probe-id',
  ZHINIAN_S3_SECRET_ACCESS_KEY: 'probe-secret',
  ZHINIAN_OIDC_ISSUER: 'https://issuer.invalid',
  ZHINIAN_OIDC_CLIENT_ID: 'probe-client',
  ZHINIAN_VOLC_ACCESS_KEY_ID: 'probe-id',
  ZHINIAN_VOLC_SECRET_ACCESS_KEY: 'probe-secret',
  ZHINIAN_ARK_API_KEY: 'probe-key',
  ZHINIAN_EVOLINK_API_KEY: 'probe-key',
};
const PROBE_VALUES = ['7777', '17', 'true', 'debug', 'https://probe.invalid/p', 'postgres://probe.invalid/p', 'probe:value-0123456789', 'probe-value-0123456789abcdef0123456789'];

interface EnvMapping {
  name: string;
  /** Configuration leaves the variable sets. */
  paths: string[];
  /** Configuration value = variable value × factor (seconds kept as milliseconds: 1000). */
  factor: number;
}

/**
 * Which configuration leaves each environment variable sets, learnt from config.ts itself
 * (`loadConfig` with one variable changed at a time), so this screen never keeps its own copy
 * of the mapping. Computed once.
 */
let mappings: EnvMapping[] | null = null;
function envMappings(): EnvMapping[] {
  if (mappings) return mappings;
  let base: Leaves;
  try {
    base = leaves(loadConfig(PROBE_BASE));
  } catch {
    // config.ts wants something the probe does not give: list the variables without their paths.
    mappings = ENV_VARS.map((name) => ({ name, paths: [], factor: 1 }));
    return mappings;
  }
  mappings = ENV_VARS.map((name) => {
    for (const probe of PROBE_VALUES) {
      let changed: Leaves;
      try {
        changed = leaves(loadConfig({ ...PROBE_BASE, [name]: probe }));
      } catch {
        continue;
      }
      const paths = [...changed.keys()].filter((p) => JSON.stringify(changed.get(p)) !== JSON.stringify(base.get(p)));
      if (paths.length === 0) continue;
      const first = changed.get(paths[0]);
      const factor = typeof first === 'number' && /^\d+$/.test(probe) ? first / Number(probe) : 1;
      return { name, paths, factor: Number.isFinite(factor) && factor > 0 ? factor : 1 };
    }
    return { name, paths: [], factor: 1 };
  });
  return mappings;
}

function show(value: unknown): string {
  if (value === null || value === undefined) return '';
  if (Array.isArray(value)) return value.map((v) => show(v)).join(', ');
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function unitOf(name: string): string {
  return UNITS.find(([suffix]) => name.endsWith(suffix))?.[1] ?? '';
}

/** The section a variable belongs to: the top of the configuration path it sets. */
function groupOf(m: EnvMapping): string {
  const top = m.paths[0]?.split('.')[0] ?? '';
  if (!top) return 'general';
  return ['http', 'apiKeys', 'providers', 'enginePreference', 'storage', 'console'].includes(top) ? top : 'general';
}

/** The environment as the operator set it, in effect now: one row per variable, every secret masked. */
export function settingsGroups(config: Readonly<Config>): { group: string; rows: SettingRow[] }[] {
  const effective = leaves(config);
  const groups = new Map<string, SettingRow[]>([['general', []]]);
  for (const m of envMappings()) {
    const group = groupOf(m);
    const secret = SECRET_VAR.test(m.name);
    const present = m.paths.filter((p) => effective.has(p));
    // A section switched off (a provider without credentials) has no such leaf now.
    const inactive = m.paths.length > 0 && present.length === 0 && !m.paths[0].startsWith('enginePreference');
    let raw: unknown = present.length > 0 ? effective.get(present[0]) : undefined;
    if (m.name === 'ZHINIAN_API_KEYS') raw = config.apiKeys;
    const isSet = raw !== null && raw !== undefined && raw !== '' && !(Array.isArray(raw) && raw.length === 0);
    let value: string | null = null;
    if (!secret && !inactive) {
      const scaled = typeof raw === 'number' && m.factor !== 1 ? raw / m.factor : raw;
      value = maskCredentials(show(scaled));
    }
    const row: SettingRow = { name: m.name, path: m.paths.join(', ').replace(/\.\d+\./g, '.'), unit: unitOf(m.name), value, secret, set: isSet, inactive };
    if (m.name === 'ZHINIAN_API_KEYS') row.path = 'apiKeys';
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group)!.push(row);
  }
  return [...groups].map(([group, rows]) => ({ group, rows }));
}

/** Clients whose keys come from ZHINIAN_API_KEYS: their ids only, never a character of a key. */
function envKeyClients(config: Readonly<Config>): { clientId: string; keys: number }[] {
  const counts = new Map<string, number>();
  for (const k of config.apiKeys ?? []) counts.set(k.clientId, (counts.get(k.clientId) ?? 0) + 1);
  return [...counts].map(([clientId, keys]) => ({ clientId, keys }));
}

export function registerSettingsPage(admin: FastifyInstance, deps: ConsoleDeps, render: Render): void {
  admin.get('/settings', async (request, reply) =>
    render(reply, request, 'settings', { nav: 'settings', groups: settingsGroups(deps.config), envKeyClients: envKeyClients(deps.config) }),
  );
}
