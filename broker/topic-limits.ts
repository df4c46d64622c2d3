import type { Logger } from 'pino';
import { parseShared } from './router.js';
import { clipTopic, topicWithinLimits, validTopic } from './topic-tree.js';

/**
 * maxTopicLevels / maxTopicLength, applied to every topic and filter whatever its source: packets
 * (handlers), the embedding API, and state restored from persistence. Nothing beyond them reaches
 * a topic tree.
 */
export class TopicLimits {
  constructor(
    readonly maxLevels: number,
    readonly maxLength: number,
    private readonly log: Logger,
  ) {}

  /** A topic name within the limits. */
  topic(topic: string): boolean {
    return topicWithinLimits(topic, this.maxLevels, this.maxLength);
  }

  /**
   * A subscription filter within the limits: a shared one's filter part by levels and bytes, and
   * the whole `$share/<group>/<filter>` by bytes.
   */
  filter(filter: string): boolean {
    const shared = parseShared(filter);
    if (!shared) return topicWithinLimits(filter, this.maxLevels, this.maxLength);
    return (
      topicWithinLimits(shared.filter, this.maxLevels, this.maxLength) &&
      topicWithinLimits(filter, Number.POSITIVE_INFINITY, this.maxLength)
    );
  }

  /** Embedding input: a bad topic is a programming error, so it throws. */
  assertTopic(topic: unknown, where: string): void {
    if (typeof topic !== 'string' || !validTopic(topic)) {
      const got = typeof topic === 'string' ? `"${clipTopic(topic)}"` : typeof topic;
      throw new TypeError(
        `${where}: topic must be a non-empty string without wildcards or U+0000, got ${got}`,
      );
    }
    if (!this.topic(topic)) {
      throw new TypeError(
        `${where}: topic has more than ${this.maxLevels} levels or ${this.maxLength} UTF-8 bytes (maxTopicLevels, maxTopicLength)`,
      );
    }
  }

  /**
   * A stored record (written by an earlier version, or under higher limits): true when within the
   * limits; otherwise a warning is logged and the caller deletes it instead of loading it.
   */
  restorable(record: string, topic: string, ok: boolean, clientId?: string): boolean {
    if (ok) return true;
    this.log.warn(
      {
        record,
        clientId,
        topic: clipTopic(topic),
        bytes: Buffer.byteLength(topic),
        maxTopicLevels: this.maxLevels,
        maxTopicLength: this.maxLength,
      },
      'stored record beyond the topic limits: skipped and deleted',
    );
    return false;
  }
}
