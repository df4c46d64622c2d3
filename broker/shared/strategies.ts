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
  /** Connected (and not still loading a resumed session). */
  readonly online: boolean;
  /** Online with room in its inflight window and nothing queued: a message goes out at once. */
  readonly ready: boolean;
  /** Online with room in its session queue: partitioning strategies queue there to keep key order. */
  readonly accepting: boolean;
  /** Unacknowledged QoS 1/2 messages. */
  readonly inflight: number;
}

export function isPartitioning(strategy: ShareStrategy): boolean {
  return strategy === 'hash-topic' || strategy === 'hash-key';
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

/** The member a partitioning strategy maps a message to among the online ones, or -1 if none is online. */
export function partitionOf(strategy: ShareStrategy, members: readonly Candidate[], msg: Message): number {
  const n = members.length;
  let online = 0;
  for (let i = 0; i < n; i++) if (members[i].online) online++;
  if (online === 0) return -1;
  const key = strategy === 'hash-key' ? (userProperty(msg, PARTITION_KEY) ?? msg.topic) : msg.topic;
  let target = hash(key) % online;
  for (let i = 0; i < n; i++) {
    if (members[i].online && target-- === 0) return i;
  }
  return -1;
}

/**
 * Picks a member index, or -1 when the message must wait in the group queue. Partitioning
 * strategies hash over the online members (so a key keeps its member while membership and
 * connections are unchanged) and take that member whenever its session queue has room: the
 * session queue keeps per-key order. The others pick among members that can send at once.
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
    case 'hash-key': {
      const i = partitionOf(strategy, members, msg);
      return i >= 0 && members[i].accepting ? i : -1;
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
