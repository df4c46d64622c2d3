import type { MessageProperties } from '../persistence/types.js';
import type { PeekedMessage, PullOptions, QueueApi, QueueStats } from '../plugins/api.js';
import type { Broker } from './broker.js';
import { createMessage, seqTime, sizeOf } from './message.js';
import { MAX_VISIBILITY_MS } from './shared/declared.js';
import type { ShareGroup } from './shared/group.js';
import { DLQ_PREFIX, DLQ_PROPERTIES } from './shared/groups.js';
import type { PulledMessage } from './shared/pull.js';
import type { Waiting } from './shared/queue.js';

/** Most messages one pull returns, and the longest long poll (as SQS). */
export const MAX_PULL = 100;
export const MAX_WAIT_MS = 20_000;

/**
 * The queue engine: declared queues (broker/shared/declared.ts) seen from pull consumers and
 * administration, the `api.queues` of plugins (the HTTP routes in plugins/queues/ use it).
 */
export class QueueEngine implements QueueApi {
  constructor(private readonly broker: Broker) {}

  has(name: string): boolean {
    return this.broker.shares.queues.has(name);
  }

  list(): QueueStats[] {
    return [...this.broker.shares.queues.values()].map((g) => stats(g));
  }

  stats(name: string): QueueStats | undefined {
    const g = this.broker.shares.queues.get(name);
    return g === undefined ? undefined : stats(g);
  }

  async pull(name: string, o: PullOptions = {}): Promise<PulledMessage[]> {
    const g = this.group(name);
    const max = bounded(o.max ?? 1, 1, MAX_PULL, 'max');
    const visibilityMs = bounded(
      o.visibilityMs ?? g.queue!.visibilityMs,
      1,
      MAX_VISIBILITY_MS,
      'visibilityMs',
    );
    const waitMs = bounded(o.waitMs ?? 0, 0, MAX_WAIT_MS, 'waitMs');
    const pulls = g.pulls!;
    const deadline = Date.now() + waitMs;
    for (;;) {
      if (o.signal?.aborted) return [];
      const got = pulls.take(max, visibilityMs);
      if (got.length > 0) return got;
      const left = deadline - Date.now();
      if (left <= 0) return got;
      // Woken when a message waits that no member took; another puller may take it first: again.
      // False: the wait ran out, was aborted, or the broker is closing.
      if (!(await pulls.wait(left, o.signal))) return [];
    }
  }

  ack(name: string, receipts: readonly string[]): { unknown: string[] } {
    return { unknown: this.group(name).pulls!.ack(receipts) };
  }

  nack(name: string, receipts: readonly string[], delayMs = 0): { unknown: string[] } {
    const g = this.group(name);
    return { unknown: g.pulls!.nack(receipts, bounded(delayMs, 0, MAX_VISIBILITY_MS, 'delayMs')) };
  }

  extend(name: string, receipts: readonly string[], visibilityMs: number): { unknown: string[] } {
    const g = this.group(name);
    return {
      unknown: g.pulls!.extend(receipts, bounded(visibilityMs, 1, MAX_VISIBILITY_MS, 'visibilityMs')),
    };
  }

  wait(name: string, ms: number, signal?: AbortSignal): Promise<boolean> {
    return this.group(name).pulls!.wait(bounded(ms, 0, MAX_WAIT_MS, 'ms'), signal);
  }

  peek(name: string, max = 10): PeekedMessage[] {
    const g = this.group(name);
    const n = bounded(max, 1, MAX_PULL, 'max');
    const out: PeekedMessage[] = [];
    const add = (e: Waiting, state: PeekedMessage['state']) => {
      if (out.length >= n) return false;
      const m = e.message;
      const p: PeekedMessage = {
        topic: m.topic,
        payload: m.payload,
        qos: m.qos,
        attempts: e.attempts,
        publishedAt: seqTime(e.seq),
        priority: e.priority,
        state,
      };
      if (m.properties !== undefined) p.properties = m.properties;
      out.push(p);
      return true;
    };
    for (const e of g.waiting.values()) if (!add(e, 'waiting')) return out;
    for (const e of g.delayed.items) if (!add(e, 'delayed')) return out;
    for (const e of g.pulls!.messages()) if (!add(e, 'pulled')) return out;
    return out;
  }

  purge(name: string): number {
    const g = this.group(name);
    const n = g.purge();
    this.broker.log.info({ queue: name, purged: n }, 'queue purged');
    return n;
  }

  replayDeadLetters(name: string, max = Number.POSITIVE_INFINITY): number {
    const target = this.group(name);
    const filter = `${DLQ_PREFIX}${name}/#`;
    const dlq = [...this.broker.shares.queues.values()].find((g) => g.filter === filter);
    if (dlq === undefined)
      throw new RangeError(`no declared queue holds ${filter}: declare one to keep dead letters`);
    const persistence = this.broker.persistence;
    let n = 0;
    while (n < max) {
      const e = dlq.waiting.shift();
      if (e === undefined) break;
      dlq.bytes -= sizeOf(e.message);
      persistence.deleteGroupMessage(dlq.id, e.seq);
      const m = e.message;
      const user = { ...m.properties?.userProperties };
      const original = user[DLQ_PROPERTIES.topic];
      const topic =
        typeof original === 'string' ? original : m.topic.slice(DLQ_PREFIX.length + name.length + 1);
      delete user[DLQ_PROPERTIES.topic];
      delete user[DLQ_PROPERTIES.attempts];
      delete user[DLQ_PROPERTIES.reasonCode];
      let props: MessageProperties | undefined;
      if (m.properties !== undefined) {
        props = { ...m.properties };
        if (Object.keys(user).length > 0) props.userProperties = user;
        else delete props.userProperties;
      }
      target.deliver(createMessage(topic, m.payload, m.qos, false, props), undefined);
      n++;
    }
    dlq.checkRoom();
    this.broker.log.info({ queue: name, replayed: n }, 'dead letters replayed');
    return n;
  }

  private group(name: string): ShareGroup {
    const g = this.broker.shares.queues.get(name);
    if (g === undefined) throw new RangeError(`no declared queue named ${name}`);
    return g;
  }
}

function bounded(n: number, lo: number, hi: number, what: string): number {
  if (typeof n !== 'number' || !Number.isFinite(n) || n < lo || n > hi)
    throw new RangeError(`${what} must be a number from ${lo} to ${hi}`);
  return Math.floor(n);
}

function stats(g: ShareGroup): QueueStats {
  const q = g.queue!;
  let oldest = Number.POSITIVE_INFINITY;
  for (const e of g.waiting.values()) if (e.seq < oldest) oldest = e.seq;
  for (const e of g.delayed.items) if (e.seq < oldest) oldest = e.seq;
  for (const e of g.pulls!.messages()) if (e.seq < oldest) oldest = e.seq;
  return {
    name: q.name,
    filter: q.filter,
    waiting: g.waiting.size,
    delayed: g.delayed.length,
    pulled: g.pulls!.size,
    bytes: g.bytes,
    members: g.members.length,
    membersOnline: g.members.filter((m) => m.online).length,
    oldestAgeMs: oldest === Number.POSITIVE_INFINITY ? null : Math.max(0, Date.now() - seqTime(oldest)),
    deadLettered: g.deadLettered,
    maxMessages: q.maxMessages,
    maxBytes: q.maxBytes,
    overflow: q.overflow,
    maxAttempts: q.maxAttempts,
    visibilityMs: q.visibilityMs,
  };
}
