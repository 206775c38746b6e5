/**
 * The pause after the `failures`-th failure in a row to reach the database: 100 ms doubling to
 * 5 s, so an outage costs a log line every few seconds rather than a busy loop, and recovery is
 * noticed within seconds.
 */
export function outageBackoffMs(failures: number): number {
  return Math.min(100 * 2 ** (failures - 1), 5_000);
}
