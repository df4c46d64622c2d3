import { randomBytes } from 'node:crypto';
import type { GroupMessageRecord, MessageProperties, QoS } from '../../persistence/types.js';
import { isExpired, type Message, seqTime, sizeOf } from '../message.js';
import type { ShareGroup } from './group.js';
import type { SharedGroups } from './groups.js';
import type { Waiting } from './queue.js';

/** A message pulled from a declared queue, as the consumer gets it. */
export interface PulledMessage {
  /** Acknowledges (or nacks, extends) this delivery; a redelivery gets a new one. */
  receipt: string;
  topic: string;
  payload: Buffer;
  qos: QoS;
  properties?: MessageProperties;
  /** This delivery's attempt: 1 the first time, +1 after each nack or expired visibility timeout. */
  attempts: number;
  /** Epoch ms at which the queue took it. */
  publishedAt: number;
  priority: number;
}

/** One pulled message until it is acknowledged, nacked or its visibility timeout passes. */
interface Lease {
  readonly receipt: string;
  readonly e: Waiting;
  until: number;
}

/**
 * A receipt is `<per-boot random>.<counter>`: unique across redeliveries and restarts. The seq is
 * not in it: a seq is a double, and its radix-36 string cost as much as the rest of a lease.
 */
const RECEIPT_PREFIX = randomBytes(6).toString('base64url');
let receipts = 0;

/** What a nack or an expired visibility timeout reports in the dead letter's `reason-code`. */
const PULL_FAILED = 0x80;

/**
 * A declared queue's pull side (SQS-style): pull leases waiting messages for a visibility timeout,
 * ack ends them, nack puts them back (after a delay, counted as an attempt), extend moves the
 * deadline. A lease is stored (GroupMessageRecord.receipt / visibleUntil), so a restart keeps it
 * and its receipt. A lease whose deadline passes is redelivered (to a member or a puller) with
 * one more attempt, or dead-lettered past the queue's maxAttempts, as an MQTT member's failure.
 * Push and pull take from the same waiting messages: each message is with one consumer at a time.
 */
export class PullQueue {
  private readonly leases = new Map<string, Lease>();
  /** Leases by deadline (a binary min-heap; a stale entry, extended or settled, is skipped). */
  private heap: { until: number; lease: Lease }[] = [];
  private timer: unknown;
  private timerDue = Number.POSITIVE_INFINITY;
  private readonly waiters = new Set<() => void>();
  /** The broker is closing: long polls end at once. */
  private closed = false;

  constructor(
    private readonly group: ShareGroup,
    private readonly host: SharedGroups,
  ) {}

  get size(): number {
    return this.leases.size;
  }

  /** Leases up to `max` waiting messages for `visibilityMs`, highest priority first. */
  take(max: number, visibilityMs: number): PulledMessage[] {
    const g = this.group;
    const out: PulledMessage[] = [];
    if (this.closed) return out;
    const now = this.host.clock.now();
    const persistence = this.host.broker.persistence;
    while (out.length < max) {
      const e = g.waiting.shift();
      if (e === undefined) break;
      if (e.message.expiresAt !== undefined && isExpired(e.message, now)) {
        // Its Message Expiry passed while it waited: never delivered [MQTT-3.3.2-5].
        g.bytes -= sizeOf(e.message);
        persistence.deleteGroupMessage(g.id, e.seq);
        continue;
      }
      const lease: Lease = {
        receipt: `${RECEIPT_PREFIX}.${(receipts++).toString(36)}`,
        e,
        until: now + visibilityMs,
      };
      this.add(lease);
      this.store(lease);
      out.push(view(lease));
    }
    if (out.length > 0) g.progressed();
    return out;
  }

  /** Acknowledged: done with. Returns the receipts not (or no longer) leased. */
  ack(receipts: readonly string[]): string[] {
    const g = this.group;
    const unknown: string[] = [];
    for (const r of receipts) {
      const lease = this.leases.get(r);
      if (lease === undefined) {
        unknown.push(r);
        continue;
      }
      this.leases.delete(r);
      g.bytes -= sizeOf(lease.e.message);
      this.host.broker.persistence.deleteGroupMessage(g.id, lease.e.seq);
    }
    if (unknown.length < receipts.length) {
      g.progressed();
      g.checkRoom();
    }
    return unknown;
  }

  /** Failed: back to the queue after `delayMs` with one more attempt, or dead-lettered. */
  nack(receipts: readonly string[], delayMs: number): string[] {
    const unknown: string[] = [];
    let back = false;
    for (const r of receipts) {
      const lease = this.leases.get(r);
      if (lease === undefined) unknown.push(r);
      else {
        this.leases.delete(r);
        back = this.failed(lease, delayMs) || back;
      }
    }
    if (back) this.group.pump();
    this.group.checkRoom();
    return unknown;
  }

  /** Moves the deadline of each lease to now + visibilityMs. */
  extend(receipts: readonly string[], visibilityMs: number): string[] {
    const unknown: string[] = [];
    const until = this.host.clock.now() + visibilityMs;
    for (const r of receipts) {
      const lease = this.leases.get(r);
      if (lease === undefined) {
        unknown.push(r);
        continue;
      }
      lease.until = until;
      this.push(lease);
      this.store(lease);
    }
    return unknown;
  }

  /** At start: a lease stored before the stop, its deadline kept (a past one expires at once). */
  restore(e: Waiting, receipt: string, until: number): void {
    this.group.bytes += sizeOf(e.message);
    this.add({ receipt, e, until });
  }

  /** Every lease's message (peek, purge). */
  *messages(): Generator<Waiting> {
    for (const l of this.leases.values()) yield l.e;
  }

  /** Ends every lease (purge) and returns their messages: their receipts no longer acknowledge anything. */
  drain(): Waiting[] {
    const all = [...this.messages()];
    this.leases.clear();
    this.heap = [];
    this.arm();
    return all;
  }

  /** Resolves when a message is waiting for a puller, or after `ms` (false then). */
  wait(ms: number, signal?: AbortSignal): Promise<boolean> {
    if (this.group.waiting.size > 0) return Promise.resolve(true);
    if (this.closed || signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const clock = this.host.clock;
      const done = (ok: boolean) => {
        this.waiters.delete(wake);
        clock.clearTimeout(timer);
        signal?.removeEventListener('abort', abort);
        resolve(ok);
      };
      const wake = () => done(true);
      const abort = () => done(false);
      const timer = clock.setTimeout(() => done(false), ms);
      this.waiters.add(wake);
      signal?.addEventListener('abort', abort, { once: true });
    });
  }

  /** Messages are waiting that no member took: long-polling pullers try again. */
  wake(): void {
    if (this.waiters.size === 0) return;
    for (const w of [...this.waiters]) w();
  }

  stop(): void {
    this.closed = true;
    if (this.timer !== undefined) this.host.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDue = Number.POSITIVE_INFINITY;
    // Resolved false: their pulls return nothing.
    for (const w of [...this.waiters]) w();
  }

  /** True when the message went back to the waiting queue at once (the caller pumps). */
  private failed(lease: Lease, delayMs: number): boolean {
    const g = this.group;
    const host = this.host;
    const e = lease.e;
    const attempts = e.attempts + 1;
    const max = g.queue!.maxAttempts;
    if (max === 0 || attempts >= max) {
      g.bytes -= sizeOf(e.message);
      host.broker.persistence.deleteGroupMessage(g.id, e.seq);
      if (max === 0) host.broker.dropped(null, e.message, 'pulled message failed');
      else host.deadLetter(g, e.message, attempts, PULL_FAILED);
      return false;
    }
    const next: Waiting = { seq: e.seq, message: e.message, priority: e.priority, attempts, dup: true };
    next.lastReason = PULL_FAILED;
    if (delayMs > 0) next.dueAt = host.clock.now() + delayMs;
    host.store(g.id, next);
    if (delayMs > 0) {
      g.delay(next);
      return false;
    }
    g.waiting.insert(next);
    return true;
  }

  private store(lease: Lease): void {
    const e = lease.e;
    const rec: GroupMessageRecord = {
      seq: e.seq,
      message: e.message,
      priority: e.priority,
      attempts: e.attempts,
      dup: true,
      receipt: lease.receipt,
      visibleUntil: lease.until,
    };
    this.host.broker.persistence.putGroupMessage(this.group.id, rec);
  }

  private add(lease: Lease): void {
    this.leases.set(lease.receipt, lease);
    this.push(lease);
  }

  private push(lease: Lease): void {
    const h = this.heap;
    h.push({ until: lease.until, lease });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p].until <= h[i].until) break;
      [h[p], h[i]] = [h[i], h[p]];
      i = p;
    }
    if (lease.until < this.timerDue) this.arm();
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && h[l].until < h[m].until) m = l;
      if (r < h.length && h[r].until < h[m].until) m = r;
      if (m === i) break;
      [h[m], h[i]] = [h[i], h[m]];
      i = m;
    }
  }

  /** The top of the heap is a live lease (stale entries dropped on the way). */
  private top(): { until: number; lease: Lease } | undefined {
    const h = this.heap;
    while (h.length > 0) {
      const t = h[0];
      if (this.leases.get(t.lease.receipt) === t.lease && t.lease.until === t.until) return t;
      this.pop();
    }
    return undefined;
  }

  private arm(): void {
    const clock = this.host.clock;
    if (this.timer !== undefined) clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDue = Number.POSITIVE_INFINITY;
    const t = this.top();
    if (t === undefined) return;
    this.timerDue = t.until;
    this.timer = clock.setTimeout(this.onTimer, t.until - clock.now());
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.timerDue = Number.POSITIVE_INFINITY;
    try {
      const now = this.host.clock.now();
      let back = false;
      for (let t = this.top(); t !== undefined && t.until <= now; t = this.top()) {
        this.pop();
        this.leases.delete(t.lease.receipt);
        back = this.failed(t.lease, 0) || back;
      }
      this.arm();
      if (back) this.group.pump();
      this.group.checkRoom();
    } catch (err) {
      this.host.broker.log.error({ err, group: this.group.id }, 'exception in a visibility timer');
    }
  };
}

function view(lease: Lease): PulledMessage {
  const { e, receipt } = lease;
  const m: Message = e.message;
  const out: PulledMessage = {
    receipt,
    topic: m.topic,
    payload: m.payload,
    qos: m.qos,
    attempts: e.attempts + 1,
    publishedAt: seqTime(e.seq),
    priority: e.priority,
  };
  if (m.properties !== undefined) out.properties = m.properties;
  return out;
}
