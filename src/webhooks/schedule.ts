/**
 * Delay before each retry, in seconds: quick at first for blips, then hours apart. The
 * delays add up to about 32 h, past the 24 h the contract promises, before a delivery is
 * given up as failed. Each delay is jittered by ±20% so retries from one outage spread out.
 */
export const RETRY_DELAYS_SECONDS = [5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800, 28800] as const;

/** Total tries: the first, then one per delay. */
export const MAX_DELIVERY_ATTEMPTS = RETRY_DELAYS_SECONDS.length + 1;

/** Milliseconds to wait after failed attempt number `attempt` (1-based), or null when out of tries. */
export function retryDelayMs(attempt: number, random: () => number = Math.random): number | null {
  const base = RETRY_DELAYS_SECONDS[attempt - 1];
  if (base === undefined) return null;
  const jitter = 0.8 + 0.4 * random();
  return Math.round(base * 1000 * jitter);
}
