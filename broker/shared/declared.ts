import type { QueueOverflow } from '../options.js';
import { QUEUE_OVERFLOW } from '../options.js';
import { validFilter } from '../topic-tree.js';
import { SHARE_STRATEGIES, type ShareStrategy } from './strategies.js';

/**
 * A declared queue (BrokerOptions.queues, `--queue name=filter`, config `queues:`): the shared
 * group `$share/<name>/<filter>` existing without members. Matching QoS 1/2 messages are stored in
 * it from start on, whether or not a member is subscribed, and go to MQTT members (push) and to
 * pull consumers (the queue engine), each message to one of them at a time.
 */
export interface QueueOptions {
  /** The share name: no `/`, `+` or `#`. */
  name: string;
  /** The topic filter it collects. */
  filter: string;
  /** Messages it holds at most (waiting, in backoff, pulled and not acknowledged). Default 100000. */
  maxMessages?: number;
  /** Bytes (payload + topic) it holds at most, likewise. Default 256 MiB. */
  maxBytes?: number;
  /** What a full queue does with a new QoS 1/2 message. Default: the broker's queueOverflow. */
  overflow?: QueueOverflow;
  /** Delivery attempts before a message goes to `$DLQ/<name>/<topic>`. Default: retryMaxAttempts. */
  maxAttempts?: number;
  /** Default visibility timeout of a pulled message, ms. Default 30000. */
  visibilityMs?: number;
  /** How it picks an MQTT member. Default: shareGroups[name] or shareStrategy. */
  strategy?: ShareStrategy;
}

/** A declared queue with every setting decided. */
export interface DeclaredQueue {
  readonly name: string;
  readonly filter: string;
  readonly maxMessages: number;
  readonly maxBytes: number;
  readonly overflow: QueueOverflow;
  readonly maxAttempts: number;
  readonly visibilityMs: number;
  readonly strategy: ShareStrategy | undefined;
}

export const QUEUE_DEFAULTS = {
  maxMessages: 100_000,
  maxBytes: 256 * 1024 * 1024,
  visibilityMs: 30_000,
} as const;

/** Longest visibility timeout a pull may ask for: 12 hours, as SQS. */
export const MAX_VISIBILITY_MS = 12 * 3600 * 1000;

/** Validates the declared queues (a bad one is a TypeError at createBroker, naming it). */
export function resolveQueues(
  list: readonly QueueOptions[],
  fallback: { queueOverflow: QueueOverflow; retryMaxAttempts: number },
): DeclaredQueue[] {
  const seen = new Set<string>();
  return list.map((q, i) => {
    const what = `queues[${i}]`;
    if (typeof q?.name !== 'string' || q.name === '' || /[/+#\0]/.test(q.name))
      throw new TypeError(`${what}.name must be a non-empty share name without / + #`);
    if (seen.has(q.name)) throw new TypeError(`${what}: queue ${q.name} is declared twice`);
    seen.add(q.name);
    if (typeof q.filter !== 'string' || !validFilter(q.filter) || q.filter.startsWith('$share/'))
      throw new TypeError(`${what}.filter must be a topic filter, got "${String(q.filter)}"`);
    const overflow = q.overflow ?? fallback.queueOverflow;
    if (!QUEUE_OVERFLOW.includes(overflow))
      throw new TypeError(`${what}.overflow must be one of ${QUEUE_OVERFLOW.join(', ')}`);
    if (q.strategy !== undefined && !SHARE_STRATEGIES.includes(q.strategy))
      throw new TypeError(`${what}.strategy must be one of ${SHARE_STRATEGIES.join(', ')}`);
    return {
      name: q.name,
      filter: q.filter,
      maxMessages: positive(q.maxMessages ?? QUEUE_DEFAULTS.maxMessages, `${what}.maxMessages`),
      maxBytes: positive(q.maxBytes ?? QUEUE_DEFAULTS.maxBytes, `${what}.maxBytes`),
      overflow,
      maxAttempts: Math.max(0, Math.floor(q.maxAttempts ?? fallback.retryMaxAttempts)),
      visibilityMs: Math.min(
        MAX_VISIBILITY_MS,
        positive(q.visibilityMs ?? QUEUE_DEFAULTS.visibilityMs, `${what}.visibilityMs`),
      ),
      strategy: q.strategy,
    };
  });
}

function positive(n: number, what: string): number {
  if (typeof n !== 'number' || !Number.isFinite(n) || n < 1) throw new TypeError(`${what} must be >= 1`);
  return Math.floor(n);
}
