import type { Message } from '../message.js';
import { userProperty } from './strategies.js';

/** The user property that orders a backed-up group queue: 0 (lowest) to 9 (highest). */
export const PRIORITY = 'priority';
export const DEFAULT_PRIORITY = 4;

/** A message's priority: its `priority` user property if it is an integer 0–9, else 4. */
export function priorityOf(msg: Message): number {
  const v = msg.properties === undefined ? undefined : userProperty(msg, PRIORITY);
  if (v === undefined || v.length !== 1) return DEFAULT_PRIORITY;
  const d = v.charCodeAt(0) - 48;
  return d >= 0 && d <= 9 ? d : DEFAULT_PRIORITY;
}

/** A message a group holds for a member: waiting, or in backoff after a failed attempt. */
export interface Waiting {
  seq: number;
  message: Message;
  priority: number;
  /** Failed attempts so far. */
  attempts: number;
  /** Sent before (a redelivery carries DUP). */
  dup: boolean;
  dueAt?: number;
  lastReason?: number;
  /** Client id of the member that failed it last. */
  lastMember?: string;
}

/** One FIFO: an array with a moving head, compacted once the dead prefix dominates. */
class Fifo {
  items: Waiting[] = [];
  head = 0;

  get size(): number {
    return this.items.length - this.head;
  }

  push(e: Waiting): void {
    this.items.push(e);
  }

  /** Inserts in seq order (a requeued message goes back among the ones that arrived after it). */
  insert(e: Waiting): void {
    let i = this.items.length;
    while (i > this.head && this.items[i - 1].seq > e.seq) i--;
    this.items.splice(i, 0, e);
  }

  peek(): Waiting | undefined {
    return this.head < this.items.length ? this.items[this.head] : undefined;
  }

  shift(): Waiting | undefined {
    if (this.head >= this.items.length) return undefined;
    const e = this.items[this.head];
    this.items[this.head++] = undefined as unknown as Waiting;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return e;
  }
}

/** Waiting messages: the highest priority first, FIFO (by seq) within a priority. */
export class PriorityQueue {
  private levels: Fifo[] = Array.from({ length: 10 }, () => new Fifo());
  size = 0;

  push(e: Waiting): void {
    this.levels[e.priority].push(e);
    this.size++;
  }

  /** Puts back a message that was handed out before: in seq order within its priority. */
  insert(e: Waiting): void {
    this.levels[e.priority].insert(e);
    this.size++;
  }

  peek(): Waiting | undefined {
    if (this.size === 0) return undefined;
    for (let p = 9; p >= 0; p--) {
      const e = this.levels[p].peek();
      if (e) return e;
    }
    return undefined;
  }

  shift(): Waiting | undefined {
    if (this.size === 0) return undefined;
    for (let p = 9; p >= 0; p--) {
      const l = this.levels[p];
      if (l.size > 0) {
        this.size--;
        return l.shift();
      }
    }
    return undefined;
  }

  /** Removes the message that arrived first (lowest seq) whatever its priority: drop-oldest. */
  shiftOldest(): Waiting | undefined {
    let best: Fifo | undefined;
    for (const l of this.levels) {
      const e = l.peek();
      if (e !== undefined && (best === undefined || e.seq < best.peek()!.seq)) best = l;
    }
    if (best === undefined) return undefined;
    this.size--;
    return best.shift();
  }

  /** Removes everything (a purged queue). */
  clear(): Waiting[] {
    const all = [...this.values()];
    for (let p = 0; p < 10; p++) this.levels[p] = new Fifo();
    this.size = 0;
    return all;
  }

  /** Every waiting message, highest priority first. */
  *values(): Generator<Waiting> {
    for (let p = 9; p >= 0; p--) {
      const l = this.levels[p];
      for (let i = l.head; i < l.items.length; i++) yield l.items[i];
    }
  }
}
