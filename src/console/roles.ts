import type { ConsoleConfig } from '../config/index.ts';
import { asciiLowerCase } from '../lib/ascii.ts';
import type { Role } from './session.ts';

/** Who signed in at the identity provider, as far as roles go (kept with the session, so roles can be resolved again). */
export interface Identity {
  /** The provider's `sub`. */
  subject: string;
  email: string | null;
  /** The provider's `email_verified`; undefined when it sends none. */
  emailVerified: boolean | undefined;
  /** Values of the configured groups claim (empty without one). */
  groups: string[];
}

type RoleConfig = Pick<ConsoleConfig, 'adminEmails' | 'viewerEmails' | 'adminGroups' | 'viewerGroups' | 'allowUnverifiedEmail'>;

/** `entry` is an address or a `*@domain` pattern (both ASCII lower case, as the config keeps them). */
function emailMatches(email: string, entry: string): boolean {
  if (entry.startsWith('*@')) return email.endsWith(entry.slice(1)) && email.length > entry.length - 1;
  return email === entry;
}

/**
 * The e-mail address an identity vouches for, ASCII lower-cased (no Unicode case folding: a
 * Kelvin sign must not become `k`), or null. Only `email_verified: true` counts, unless the
 * operator allowed providers that never send the claim (ZHINIAN_OIDC_ALLOW_UNVERIFIED_EMAIL);
 * `false` never counts. Without this, anyone whose provider lets them type an address (Entra
 * ID omits the claim by default) could take an admin's.
 */
function verifiedEmail(identity: Pick<Identity, 'email' | 'emailVerified'>, config: Pick<RoleConfig, 'allowUnverifiedEmail'>): string | null {
  if (identity.email === null || identity.email.length === 0 || identity.email.length > 320) return null;
  const trusted = identity.emailVerified === true || (identity.emailVerified === undefined && config.allowUnverifiedEmail);
  return trusted ? asciiLowerCase(identity.email) : null;
}

/**
 * The console role of a signed-in identity (CONTRACT: "Browser console and SSO"): its verified
 * e-mail in ZHINIAN_ADMIN_EMAILS / ZHINIAN_VIEWER_EMAILS, or a group in ZHINIAN_ADMIN_GROUPS /
 * ZHINIAN_VIEWER_GROUPS. Admin wins over viewer; null: no role, no session. Called at sign-in
 * and again whenever a session is used, so a change of the lists reaches live sessions.
 */
export function roleFor(identity: Identity, config: RoleConfig): Role | null {
  const email = verifiedEmail(identity, config);
  const byEmail = (entries: string[]) => email !== null && entries.some((entry) => emailMatches(email, entry));
  const byGroup = (groups: string[]) => identity.groups.some((group) => groups.includes(group));
  if (byEmail(config.adminEmails) || byGroup(config.adminGroups)) return 'admin';
  if (byEmail(config.viewerEmails) || byGroup(config.viewerGroups)) return 'viewer';
  return null;
}

/** Who an identity is in the audit log and the session list: its verified e-mail, else its subject. */
export function actorOf(identity: Identity, config: Pick<RoleConfig, 'allowUnverifiedEmail'>): string {
  return verifiedEmail(identity, config) ?? `sub:${identity.subject}`;
}
