/**
 * How one sender's pool is shared between clients. A client may hold at most half the pool
 * (rounded up), and the last quarter (rounded down) only goes to clients with nothing in flight
 * here: so however many of one client's receivers hang, every other client finds a free slot,
 * and a few more clients still do when two of them hang. Counted per process (each process has
 * its own pool); across processes the claim prefers the client with the fewest attempts in flight.
 */
export interface ClientShare {
  /** Whether this pool may take one more delivery of `clientId` now. */
  mayTake(clientId: string): boolean;
  took(clientId: string): void;
  done(clientId: string): void;
}

export function clientShare(concurrency: number): ClientShare {
  const share = Math.max(1, Math.ceil(concurrency / 2));
  const reserve = Math.floor(concurrency / 4);
  const byClient = new Map<string, number>();
  let total = 0;
  return {
    mayTake(clientId) {
      const mine = byClient.get(clientId) ?? 0;
      const free = concurrency - total;
      return free > 0 && mine < share && (mine === 0 || free > reserve);
    },
    took(clientId) {
      byClient.set(clientId, (byClient.get(clientId) ?? 0) + 1);
      total++;
    },
    done(clientId) {
      const mine = (byClient.get(clientId) ?? 0) - 1;
      if (mine > 0) byClient.set(clientId, mine);
      else byClient.delete(clientId);
      total--;
    },
  };
}
