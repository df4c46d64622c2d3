import type { Message } from '../message.js';

/** How a shared group picks the member that gets a message. */
export type ShareStrategy = 'round-robin' | 'least-inflight' | 'hash-topic' | 'hash-key' | 'random';

export const SHARE_STRATEGIES: readonly ShareStrategy[] = [
  'round-robin',
  'least-inflight',
  'hash-topic',
  'hash-key',
  'random',
];

/** What a strategy needs to know of a member. */
export interface Candidate {
  /** Connected with room in its inflight window. */
  readonly ready: boolean;
  readonly inflight: number;
}

/** The user property that partitions messages for `hash-key`. */
export const PARTITION_KEY = 'partition-key';

/** FNV-1a: a cheap, stable string hash, so a key maps to the same member across restarts. */
export function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function userProperty(msg: Message, name: string): string | undefined {
  const v = msg.properties?.userProperties?.[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Picks a member index, or -1 when the message must wait in the group queue. Partitioning
 * strategies always pick the member its key hashes to (ready or not), so per-key order holds;
 * the others skip members without room.
 */
export function pick(
  strategy: ShareStrategy,
  members: readonly Candidate[],
  msg: Message,
  cursor: { next: number },
  random: () => number = Math.random,
): number {
  const n = members.length;
  if (n === 0) return -1;
  switch (strategy) {
    case 'hash-topic':
      return hash(msg.topic) % n;
    case 'hash-key': {
      const key = userProperty(msg, PARTITION_KEY);
      return hash(key ?? msg.topic) % n;
    }
    case 'least-inflight': {
      let best = -1;
      for (let i = 0; i < n; i++) {
        // Ties go round-robin, so equal workers share evenly.
        const j = (cursor.next + i) % n;
        const m = members[j];
        if (m.ready && (best < 0 || m.inflight < members[best].inflight)) best = j;
      }
      if (best >= 0) cursor.next = (best + 1) % n;
      return best;
    }
    case 'random': {
      const start = Math.floor(random() * n);
      for (let i = 0; i < n; i++) if (members[(start + i) % n].ready) return (start + i) % n;
      return -1;
    }
    default: {
      for (let i = 0; i < n; i++) {
        const j = (cursor.next + i) % n;
        if (members[j].ready) {
          cursor.next = (j + 1) % n;
          return j;
        }
      }
      return -1;
    }
  }
}
