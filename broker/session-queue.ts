import type { OutgoingRecord } from '../persistence/types.js';
import type { Broker } from './broker.js';
import type { Connection } from './connection.js';
import { Gate, type GateOwner } from './flow.js';
import { type Message, sizeOf } from './message.js';
import type { QueueOverflow } from './options.js';
import { readBack } from './read-back-gc.js';

/** Shared by sessions with nothing in flight; never written: replaced on first use. */
export const NO_INFLIGHT = new Map<number, OutgoingRecord>();
/** Records read from persistence at a time: a spilled or offline queue comes back in pages this big. */
const PAGE = 1000;

/**
 * A session's outgoing messages as memory holds them: the inflight window and the ordered queue
 * behind it, their bounds in messages and bytes, the overflow policy (broker/flow.ts), and the
 * part that lives in persistence (offline, or spilled past the bound), read back a page at a time.
 * Session (broker/session.ts) adds the protocol: sending, acknowledgements, resume.
 */
export abstract class SessionQueue implements GateOwner {
  abstract conn: Connection | null;
  /** Sent and unacknowledged, by packet id, in send order. */
  inflight: Map<number, OutgoingRecord> = NO_INFLIGHT;
  /** Waiting for room in the inflight window, in order. */
  protected queue: OutgoingRecord[] = [];
  protected queueHead = 0;
  /** False for a session restored from persistence whose messages are still only on disk. */
  loaded = true;
  protected loading: Promise<void> | null = null;
  /** Records completed while a load was reading: the snapshot it reads may still hold them. */
  protected doneWhileLoading: Set<number> | undefined;
  /**
   * The seq up to which memory holds this session's records (queued, in flight, or done): a spilled
   * queue's next page is read from persistence past it. 0 once memory holds none of them.
   */
  protected pagedTo = 0;
  /**
   * Memory's queue was full while a page was read: what arrived since went to persistence only,
   * and the load leaves the session spilled, to read it with the next page.
   */
  protected spilledWhileLoading = false;
  /** Bytes written to persistence while not loaded (offline or spilled), against maxQueuedBytes. */
  storedBytes = 0;
  /** Bytes of the records held in memory (queued and in flight), against maxQueuedBytes. */
  heldBytes = 0;
  /** What publishers wait on while this session's queue is full (created on first overflow). */
  gate: Gate | undefined;

  /** This session's queue overflow policy, resolved once from its client id. */
  readonly overflowPolicy: QueueOverflow;

  constructor(
    readonly broker: Broker,
    readonly clientId: string,
  ) {
    this.overflowPolicy = broker.overflowPolicies.for(clientId);
  }

  /** A session with a non-zero expiry outlives its connection and is written to persistence. */
  abstract get persistent(): boolean;

  get queued(): number {
    return this.queue.length - this.queueHead;
  }

  abstract stuck(): void;
  /** Inbound QoS 2 packet ids read with a page. */
  protected abstract loadedIncoming(ids: number[]): void;
  /** A non-persistent session's records were all read (see load). */
  protected abstract loadedAll(): void;

  /** Still loading a resumed session's messages from persistence. */
  get resuming(): boolean {
    return this.loading !== null;
  }

  /** Connected, loaded, nothing queued and room in the window: a QoS 1/2 message would be sent now. */
  canSendNow(): boolean {
    return (
      this.conn !== null && this.loading === null && this.queued === 0 && this.inflight.size < this.window
    );
  }

  protected get window(): number {
    return this.conn ? this.conn.outboundWindow : this.broker.options.maxInflight;
  }

  /** A full queue in memory may continue in persistence (the policies that promise no loss). */
  protected spillable(): boolean {
    const policy = this.overflowPolicy;
    return this.persistent && (policy === 'backpressure' || policy === 'reject');
  }

  /** Whether a QoS 1/2 message would be taken now, within the bounds (the `reject` check). */
  canTake(): boolean {
    if (this.canSendNow()) return true;
    if ((!this.loaded && this.loading === null) || this.spilledWhileLoading)
      return this.storedBytes < this.broker.options.maxQueuedBytes;
    return !this.full() || this.spillable();
  }

  /** The in-memory queue (or the broker's memory budget) has no room for another message. */
  full(): boolean {
    const o = this.broker.options;
    if ((!this.loaded && this.loading === null) || this.spilledWhileLoading)
      return this.storedBytes >= o.maxQueuedBytes;
    return this.queued >= o.maxQueued || this.heldBytes >= o.maxQueuedBytes || this.broker.flow.memoryFull;
  }

  /**
   * A QoS 1/2 message this session's bound cannot take, under the overflow policy: whether it is
   * queued all the same. Under `backpressure` (and `reject` for publishers that cannot be told,
   * see Router.route) it is, beyond the bound, and its publisher waits for room (broker/flow.ts):
   * the excess is bounded by what that publisher had sent before it stopped being read.
   */
  protected overflow(msg: Message, inMemory: boolean): boolean {
    const broker = this.broker;
    const flow = broker.flow;
    flow.overflows++;
    const policy = this.overflowPolicy;
    if (policy === 'drop-new') {
      broker.dropped(this, msg, 'queue full');
      return false;
    }
    if (policy === 'drop-oldest') {
      if (inMemory && this.dropOldest()) return true;
      broker.dropped(this, msg, 'queue full');
      return false;
    }
    this.gate ??= new Gate(flow, this);
    const gate = inMemory && flow.memoryFull && !this.ownFull() ? flow.memoryGate : this.gate;
    if (gate.stuck) {
      // Its publishers already waited stuckTimeout on it: they are not held back again.
      broker.dropped(
        this,
        msg,
        gate === flow.memoryGate ? 'memory budget full' : 'queue full (stuck consumer)',
      );
      return false;
    }
    flow.overflowed.push(gate);
    return true;
  }

  protected ownFull(): boolean {
    const o = this.broker.options;
    return this.queued >= o.maxQueued || this.heldBytes >= o.maxQueuedBytes;
  }

  /** drop-oldest: the oldest queued (not yet sent) message of this session makes room. */
  protected dropOldest(): boolean {
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const rec = this.queue[i];
      if (rec.group !== undefined) continue;
      this.queue.splice(i, 1);
      this.unhold(rec);
      if (this.persistent) this.broker.persistence.deleteOutgoing(this.clientId, rec.seq);
      this.broker.dropped(this, rec.message, 'queue full (oldest dropped)');
      return true;
    }
    return false;
  }

  protected hold(rec: OutgoingRecord): void {
    const n = sizeOf(rec.message);
    this.heldBytes += n;
    this.broker.flow.hold(rec.message, n);
  }

  protected unhold(rec: OutgoingRecord): void {
    const n = sizeOf(rec.message);
    this.heldBytes -= n;
    this.broker.flow.release(rec.message, n);
  }

  /** Room again below three quarters of the bounds: publishers waiting on this session resume. */
  protected checkRoom(): void {
    const gate = this.gate;
    if (gate === undefined || !gate.waiting) return;
    const o = this.broker.options;
    const roomy = this.loaded
      ? this.queued <= o.maxQueued * 0.75 && this.heldBytes <= o.maxQueuedBytes * 0.75
      : this.storedBytes <= o.maxQueuedBytes * 0.75;
    if (roomy) gate.open();
  }

  /** A persistent session went offline: its records are in persistence, memory keeps none of them. */
  offload(): void {
    if (this.loading !== null || !this.persistent) return;
    let bytes = 0;
    // A shared group's messages are not in the session's store: they stay here.
    const kept: OutgoingRecord[] = [];
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const rec = this.queue[i];
      if (rec.group !== undefined) {
        kept.push(rec);
        continue;
      }
      bytes += sizeOf(rec.message);
      this.unhold(rec);
    }
    this.queue = kept;
    this.queueHead = 0;
    for (const [id, rec] of this.inflight) {
      if (rec.group !== undefined) continue;
      bytes += sizeOf(rec.message);
      this.unhold(rec);
      this.inflight.delete(id);
    }
    // Spilled already, persistence held the rest too: it now holds everything, read from the start.
    this.storedBytes += bytes;
    this.loaded = false;
    this.pagedTo = 0;
    this.checkRoom();
  }

  /** The session is over: publishers waiting on it resume, its memory is released. */
  ended(): void {
    for (let i = this.queueHead; i < this.queue.length; i++) this.unhold(this.queue[i]);
    for (const rec of this.inflight.values()) this.unhold(rec);
    this.queue = [];
    this.queueHead = 0;
    this.gate?.open();
  }

  /**
   * Reads the session's records from persistence: a persistent session one page at a time (the
   * window and the queue bound, so memory holds no more than it would have queued), the rest
   * staying there until this page is sent; a session resumed with expiry 0 all at once.
   */
  protected async load(): Promise<void> {
    let done!: () => void;
    this.loading = new Promise<void>((r) => {
      done = r;
    });
    const p = this.broker.persistence;
    try {
      const paged = this.persistent;
      const limit = Math.min(
        PAGE,
        this.broker.options.maxInflight + Math.max(1, this.broker.options.maxQueued),
      );
      const [stored, incoming] = await Promise.all([
        p.getOutgoing(this.clientId, paged ? limit : undefined, this.pagedTo > 0 ? this.pagedTo : undefined),
        p.getIncoming(this.clientId),
      ]);
      this.loadedIncoming(incoming);
      let bytes = 0;
      for (const rec of stored) bytes += sizeOf(rec.message);
      readBack(bytes);
      const read = !paged || stored.length < limit;
      // Spilled while reading: persistence holds records past what memory keeps, read next.
      const spilled = this.spilledWhileLoading;
      this.spilledWhileLoading = false;
      const complete = read && !spilled;
      // Records past this page stay in persistence, read with a later page, in order.
      const last = read ? Number.POSITIVE_INFINITY : stored[stored.length - 1].seq;
      // Memory accounting is rebuilt from what the merge below keeps.
      for (let i = this.queueHead; i < this.queue.length; i++) this.unhold(this.queue[i]);
      for (const rec of this.inflight.values()) this.unhold(rec);
      // What memory holds is newer than what was read: in flight (maybe acknowledged further since),
      // completed while reading, or arrived while reading (in persistence too: a persistent session
      // writes each; a shared group's are only here).
      const done = this.doneWhileLoading;
      this.doneWhileLoading = undefined;
      const bySeq = new Map<number, OutgoingRecord>();
      for (const rec of stored) if (done === undefined || !done.has(rec.seq)) bySeq.set(rec.seq, rec);
      for (const rec of this.inflight.values()) bySeq.set(rec.seq, rec);
      this.inflight.clear();
      for (let i = this.queueHead; i < this.queue.length; i++) {
        const rec = this.queue[i];
        if (rec.seq <= last || rec.group !== undefined) bySeq.set(rec.seq, rec);
      }
      const queue: OutgoingRecord[] = [];
      for (const rec of [...bySeq.values()].sort((a, b) => a.seq - b.seq)) {
        if (rec.state === 'queued' || rec.packetId === undefined) queue.push(rec);
        else {
          if (this.inflight === NO_INFLIGHT) this.inflight = new Map();
          this.inflight.set(rec.packetId, rec);
        }
      }
      this.queue = queue;
      this.queueHead = 0;
      for (const rec of queue) this.hold(rec);
      for (const rec of this.inflight.values()) this.hold(rec);
      this.loaded = complete;
      // Incomplete: memory holds up to this page's end (later arrivals were dropped from memory
      // above, to be read with the next page). Read to the end but spilled meanwhile: memory holds
      // the page and what arrived before the spill (each newer than the page), persistence the rest.
      if (!read) this.pagedTo = last;
      else if (spilled) {
        const end = stored.length > 0 ? stored[stored.length - 1].seq : 0;
        this.pagedTo = Math.max(this.pagedTo, end);
      }
      this.storedBytes = complete ? 0 : Math.max(0, p.outgoingBytes(this.clientId) - this.heldBytes);
      if (!this.persistent) this.loadedAll();
    } finally {
      this.loading = null;
      done();
    }
  }
}
