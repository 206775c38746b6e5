import type { ConsoleConfig } from '../config/index.ts';
import type { Role } from './session.ts';

/** Who signed in at the identity provider, as far as roles go. */
export interface Identity {
  email: string | null;
  /** The provider's `email_verified`; undefined when it sends none. */
  emailVerified: boolean | undefined;
  /** Values of the configured groups claim (empty without one). */
  groups: string[];
}

/** `entry` is an address or a `*@domain` pattern (both lower case, as the config keeps them). */
function emailMatches(email: string, entry: string): boolean {
  if (entry.startsWith('*@')) return email.endsWith(entry.slice(1)) && email.length > entry.length - 1;
  return email === entry;
}

/**
 * The console role of a signed-in identity (CONTRACT: "Browser console and SSO"): its e-mail
 * (not when the provider says it is unverified) in ZHINIAN_ADMIN_EMAILS / ZHINIAN_VIEWER_EMAILS,
 * or a group in ZHINIAN_ADMIN_GROUPS / ZHINIAN_VIEWER_GROUPS. Admin wins over viewer; null: no
 * role, no session.
 */
export function roleFor(identity: Identity, config: Pick<ConsoleConfig, 'adminEmails' | 'viewerEmails' | 'adminGroups' | 'viewerGroups'>): Role | null {
  const email = identity.email && identity.emailVerified !== false ? identity.email.trim().toLowerCase() : null;
  const byEmail = (entries: string[]) => email !== null && email.length > 0 && entries.some((entry) => emailMatches(email, entry));
  const byGroup = (groups: string[]) => identity.groups.some((group) => groups.includes(group));
  if (byEmail(config.adminEmails) || byGroup(config.adminGroups)) return 'admin';
  if (byEmail(config.viewerEmails) || byGroup(config.viewerGroups)) return 'viewer';
  return null;
}
