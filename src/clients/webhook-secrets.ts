import { randomBytes } from 'node:crypto';

/** A previous webhook secret keeps signing beside the new one this long after a rotation. */
const WEBHOOK_SECRET_OVERLAP_MS = 24 * 3_600_000;
/** Previous secrets kept at most (rotations within one overlap); the oldest beyond go at once. */
const MAX_PREVIOUS_SECRETS = 8;

/** An earlier secret still signing until `until` (epoch ms); `secret` null: the shared ZHINIAN_WEBHOOK_SECRET. */
export interface PreviousSecret {
  secret: string | null;
  until: number;
}

export const newWebhookSecret = (): string => `whsec_${randomBytes(24).toString('base64')}`;

export function parsePreviousSecrets(json: string | null): PreviousSecret[] {
  if (json === null) return [];
  const parsed = JSON.parse(json) as PreviousSecret[];
  return Array.isArray(parsed) ? parsed : [];
}

/**
 * The previous secrets after a rotation at `now`: the secret being replaced (the client's own,
 * or the shared one it was signed with, when there is one) gets its full overlap, and every
 * earlier one keeps the end it already had, so a quick second rotation cuts nobody's short.
 */
export function previousAfterRotation(opts: { current: string | null; previous: PreviousSecret[]; sharedSecretSet: boolean; now: number }): PreviousSecret[] {
  const replaced: PreviousSecret[] = opts.current !== null || opts.sharedSecretSet ? [{ secret: opts.current, until: opts.now + WEBHOOK_SECRET_OVERLAP_MS }] : [];
  return [...replaced, ...opts.previous.filter((p) => p.until > opts.now)].slice(0, MAX_PREVIOUS_SECRETS);
}

/**
 * The secrets that sign a client's webhooks at `now`, newest first; empty: the client has none
 * of its own (ZHINIAN_WEBHOOK_SECRET signs, or nothing when that is unset).
 */
export function signingSecrets(opts: { current: string | null; previousJson: string | null; shared: string | null; now: number }): string[] {
  if (opts.current === null) return [];
  const previous = parsePreviousSecrets(opts.previousJson)
    .filter((p) => p.until > opts.now)
    .map((p) => p.secret ?? opts.shared);
  return [...new Set([opts.current, ...previous.filter((s): s is string => s !== null)])];
}
