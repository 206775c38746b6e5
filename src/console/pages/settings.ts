import type { FastifyInstance } from 'fastify';
import type { Config } from '../../config/index.ts';
import type { ConsoleDeps } from '../deps.ts';
import type { Render } from '../render.ts';

/** Field names whose values are secrets: shown only as set or unset. */
const SECRET_NAME = /secret|password|apikey|accesskey|token|credential|privatekey/i;

interface SettingRow {
  path: string;
  /** Display value; for a secret, null (the page shows •••• and set/unset). */
  value: string | null;
  secret: boolean;
  set: boolean;
}

/** A URL with any password replaced (a database URL carries one). */
function maskUrl(value: string): string {
  try {
    const url = new URL(value);
    if (url.password) url.password = '****';
    return url.toString();
  } catch {
    return value;
  }
}

function show(value: unknown): string {
  if (value === null || value === undefined) return '';
  if (Array.isArray(value)) return value.map((v) => show(v)).join(', ');
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function flatten(prefix: string, value: unknown, out: SettingRow[]): void {
  const name = prefix.slice(prefix.lastIndexOf('.') + 1);
  if (SECRET_NAME.test(name) && (value === null || typeof value !== 'object')) {
    out.push({ path: prefix, value: null, secret: true, set: value !== null && value !== undefined && value !== '' });
    return;
  }
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const entries = Object.entries(value);
    if (entries.length === 0) out.push({ path: prefix, value: '', secret: false, set: false });
    for (const [k, v] of entries) flatten(`${prefix}.${k}`, v, out);
    return;
  }
  const text = show(value);
  out.push({ path: prefix, value: /url$/i.test(name) && text ? maskUrl(text) : text, secret: false, set: text !== '' });
}

/** The effective configuration, grouped by its top-level sections; every secret masked. */
function settingsGroups(config: Readonly<Config>): { group: string; rows: SettingRow[] }[] {
  const general: SettingRow[] = [];
  const groups: { group: string; rows: SettingRow[] }[] = [];
  for (const [key, value] of Object.entries(config)) {
    if (key === 'apiKeys') {
      // API keys from ZHINIAN_API_KEYS: which clients have one; never the key.
      const keys = (value as Config['apiKeys']) ?? [];
      const rows: SettingRow[] = keys.map((k, i) => ({ path: `apiKeys[${i}] ${k.clientId}`, value: null, secret: true, set: k.key !== '' }));
      if (rows.length === 0) rows.push({ path: 'apiKeys', value: null, secret: true, set: false });
      groups.push({ group: key, rows });
    } else if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const rows: SettingRow[] = [];
      flatten(key, value, rows);
      groups.push({ group: key, rows });
    } else {
      flatten(key, value, general);
    }
  }
  return [{ group: 'general', rows: general }, ...groups];
}

export function registerSettingsPage(admin: FastifyInstance, deps: ConsoleDeps, render: Render): void {
  admin.get('/settings', async (request, reply) => render(reply, request, 'settings', { nav: 'settings', groups: settingsGroups(deps.config) }));
}
