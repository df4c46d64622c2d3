import type { OutgoingRecord, QoS, SubscriptionRecord } from '../persistence/types.js';
import type { Broker } from './broker.js';
import type { Connection } from './connection.js';
import type { EncodeCache } from './encode.js';
import { Gate, type GateOwner } from './flow.js';
import { isExpired, type Message, nextSeq, outgoingRecord, sizeOf } from './message.js';
import { RC } from './reason-codes.js';
import type { ShareGroup } from './shared/group.js';

// Shared empty collections: an idle session allocates none until it needs one.
const NO_SUBS: ReadonlyMap<string, SubscriptionRecord> = new Map();
const NO_INFLIGHT = new Map<number, OutgoingRecord>(); // never written: replaced on first use
const NO_IDS: ReadonlySet<number> = new Set();

/**
 * The state of one client identifier that outlives a connection: subscriptions, the outbound
 * inflight window and the ordered queue behind it, inbound QoS 2 packet ids, and expiry.
 */
export class Session implements GateOwner {
  conn: Connection | null = null;
  /** The connection that resumed this session (CONNACK Session Present 1), if the current one did. */
  resumedBy: Connection | null = null;
  subscriptions: ReadonlyMap<string, SubscriptionRecord> = NO_SUBS;
  /** Sent and unacknowledged, by packet id, in send order. */
  inflight: Map<number, OutgoingRecord> = NO_INFLIGHT;
  /** Waiting for room in the inflight window, in order. */
  private queue: OutgoingRecord[] = [];
  private queueHead = 0;
  /** Inbound QoS 2 packet ids awaiting PUBREL. */
  incoming: ReadonlySet<number> = NO_IDS;
  /** False for a session restored from persistence whose messages are still only on disk. */
  loaded = true;
  private loading: Promise<void> | null = null;
  /** Records completed while a load was reading: the snapshot it reads may still hold them. */
  private doneWhileLoading: Set<number> | undefined;
  private nextPacketId = 1;
  expiryTimer: NodeJS.Timeout | undefined;
  /**
   * The seq up to which memory holds this session's records (queued, in flight, or done): a spilled
   * queue's next page is read from persistence past it. 0 once memory holds none of them.
   */
  private pagedTo = 0;
  /** Bytes written to persistence while not loaded (offline or spilled), against maxQueuedBytes. */
  storedBytes = 0;
  /** Bytes of the records held in memory (queued and in flight), against maxQueuedBytes. */
  heldBytes = 0;
  /** What publishers wait on while this session's queue is full (created on first overflow). */
  gate: Gate | undefined;
  /** The shared subscription groups this session is a member of. */
  shareGroups: ShareGroup[] | undefined;
  /** Set once a group message was handed to this session: it may hold some (see takeGroupRecords). */
  hasGroupRecords = false;

  // Scratch fields used by the router while it collects one publish's targets.
  stamp = 0;
  matchQos: QoS = 0;
  matchRetain = false;
  matchSubIds: number[] | undefined;

  constructor(
    readonly broker: Broker,
    readonly clientId: string,
    public protocolVersion: 3 | 4 | 5,
    public expiryInterval: number,
  ) {}

  /** A session with a non-zero expiry outlives its connection and is written to persistence. */
  get persistent(): boolean {
    return this.expiryInterval > 0;
  }

  get queued(): number {
    return this.queue.length - this.queueHead;
  }

  addSubscription(rec: SubscriptionRecord): void {
    if (this.subscriptions === NO_SUBS) this.subscriptions = new Map();
    (this.subscriptions as Map<string, SubscriptionRecord>).set(rec.filter, rec);
  }

  removeSubscription(filter: string): boolean {
    return (
      this.subscriptions !== NO_SUBS && (this.subscriptions as Map<string, SubscriptionRecord>).delete(filter)
    );
  }

  clearSubscriptions(): void {
    this.subscriptions = NO_SUBS;
  }

  /** Inbound QoS 2 packet id received, awaiting PUBREL. */
  rememberIncoming(id: number): void {
    if (this.incoming === NO_IDS) this.incoming = new Set();
    (this.incoming as Set<number>).add(id);
  }

  forgetIncoming(id: number): boolean {
    return this.incoming !== NO_IDS && (this.incoming as Set<number>).delete(id);
  }

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

  private get window(): number {
    return this.conn ? this.conn.outboundWindow : this.broker.options.maxInflight;
  }

  /** Delivers a routed message at the given QoS: sends it now, queues it, or stores it for later. */
  deliver(msg: Message, qos: QoS, retain: boolean, subIds: number[] | undefined, cache?: EncodeCache): void {
    const conn = this.conn;
    if (qos === 0) {
      // QoS 0 is at most once: sent only to a connected client that is keeping up.
      if (conn && this.loading === null) conn.sendPublish(msg, 0, retain, false, 0, subIds, cache);
      return;
    }
    const rec = outgoingRecord({
      seq: nextSeq(),
      state: 'queued',
      qos,
      retain,
      message: msg,
      subscriptionIds: subIds,
    });
    const opts = this.broker.options;
    if (!this.loaded && this.loading === null) {
      // Offline (or spilled) and not loaded: the message lives only in persistence until the
      // client reads again, bounded in bytes.
      const size = sizeOf(msg);
      if (this.storedBytes + size > opts.maxQueuedBytes && !this.overflow(msg, false)) return;
      this.storedBytes += size;
      this.broker.persistence.putOutgoing(this.clientId, rec);
      return;
    }
    if (this.canSendNow()) {
      this.pagedTo = rec.seq;
      this.hold(rec);
      this.send(rec, cache);
      return;
    }
    if (this.full()) {
      if (this.spillable()) {
        // Persistent and full in memory: what follows goes to persistence only, read back in
        // order once memory's queue is sent; publishers are not held back for it.
        this.loaded = false;
        this.storedBytes = 0;
        return this.deliver(msg, qos, retain, subIds);
      }
      if (!this.overflow(msg, true)) return;
    }
    if (this.persistent) this.broker.persistence.putOutgoing(this.clientId, rec);
    this.pagedTo = rec.seq;
    this.hold(rec);
    this.queue.push(rec);
  }

  /** A full queue in memory may continue in persistence (the policies that promise no loss). */
  private spillable(): boolean {
    const policy = this.broker.options.queueOverflow;
    return this.persistent && this.loading === null && (policy === 'backpressure' || policy === 'reject');
  }

  /** Whether a QoS 1/2 message would be taken now, within the bounds (the `reject` check). */
  canTake(): boolean {
    if (this.canSendNow()) return true;
    if (!this.loaded && this.loading === null) return this.storedBytes < this.broker.options.maxQueuedBytes;
    return !this.full() || this.spillable();
  }

  /** The in-memory queue (or the broker's memory budget) has no room for another message. */
  full(): boolean {
    const o = this.broker.options;
    if (!this.loaded && this.loading === null) return this.storedBytes >= o.maxQueuedBytes;
    return this.queued >= o.maxQueued || this.heldBytes >= o.maxQueuedBytes || this.broker.flow.memoryFull;
  }

  /**
   * A QoS 1/2 message this session's bound cannot take, under the overflow policy: whether it is
   * queued all the same. Under `backpressure` (and `reject` for publishers that cannot be told,
   * see Router.route) it is, beyond the bound, and its publisher waits for room (broker/flow.ts):
   * the excess is bounded by what that publisher had sent before it stopped being read.
   */
  private overflow(msg: Message, inMemory: boolean): boolean {
    const broker = this.broker;
    const flow = broker.flow;
    flow.overflows++;
    const policy = broker.options.queueOverflow;
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
      broker.dropped(this, msg, 'queue full (stuck consumer)');
      return false;
    }
    flow.overflowed.push(gate);
    return true;
  }

  private ownFull(): boolean {
    const o = this.broker.options;
    return this.queued >= o.maxQueued || this.heldBytes >= o.maxQueuedBytes;
  }

  /** drop-oldest: the oldest queued (not yet sent) message of this session makes room. */
  private dropOldest(): boolean {
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

  private hold(rec: OutgoingRecord): void {
    const n = sizeOf(rec.message);
    this.heldBytes += n;
    this.broker.flow.hold(rec.message, n);
  }

  private unhold(rec: OutgoingRecord): void {
    const n = sizeOf(rec.message);
    this.heldBytes -= n;
    this.broker.flow.release(rec.message, n);
  }

  /** Room again below three quarters of the bounds: publishers waiting on this session resume. */
  private checkRoom(): void {
    const gate = this.gate;
    if (gate === undefined || !gate.waiting) return;
    const o = this.broker.options;
    const roomy = this.loaded
      ? this.queued <= o.maxQueued * 0.75 && this.heldBytes <= o.maxQueuedBytes * 0.75
      : this.storedBytes <= o.maxQueuedBytes * 0.75;
    if (roomy) gate.open();
  }

  /**
   * Its publishers waited stuckTimeout without an acknowledgement from it (broker/flow.ts): a clean
   * session is disconnected. A persistent one holds publishers back only once its queue in
   * persistence is at maxQueuedBytes too: beyond that, until it makes progress, messages for it
   * are dropped, counted and logged.
   */
  stuck(): void {
    this.broker.log.warn(
      { clientId: this.clientId, queued: this.queued, bytes: this.heldBytes + this.storedBytes },
      this.persistent
        ? 'stuck consumer: its queue is full, new messages are dropped'
        : 'stuck consumer: disconnected',
    );
    if (!this.persistent) this.conn?.close(RC.QUOTA_EXCEEDED, 'stuck consumer');
  }

  /** A persistent session went offline: its records are in persistence, memory keeps none of them. */
  offload(): void {
    if (!this.loaded || this.loading !== null || !this.persistent) return;
    let bytes = 0;
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const rec = this.queue[i];
      bytes += sizeOf(rec.message);
      this.unhold(rec);
    }
    this.queue = [];
    this.queueHead = 0;
    for (const [id, rec] of this.inflight) {
      // A shared group's QoS 2 message in flight is not in the session's store: it stays here.
      if (rec.group !== undefined) continue;
      bytes += sizeOf(rec.message);
      this.unhold(rec);
      this.inflight.delete(id);
    }
    this.loaded = false;
    this.pagedTo = 0;
    this.storedBytes = bytes;
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
   * A QoS 1/2 message from a shared subscription group: sent now if the window has room, else
   * queued (partitioning strategies only). Not written to the session's persistence: the group's
   * store holds it until it is acknowledged, and takes it back if this member goes away. At QoS 2
   * the group's record names this member and the packet id once it is sent (see send).
   */
  deliverGroup(rec: OutgoingRecord, cache?: EncodeCache): void {
    this.hasGroupRecords = true;
    this.hold(rec);
    if (this.canSendNow()) this.send(rec, cache);
    else this.queue.push(rec);
  }

  /** Sends a record this session holds (see hold) and moves it in flight. */
  private send(rec: OutgoingRecord, cache?: EncodeCache): void {
    const conn = this.conn!;
    const group = rec.group !== undefined;
    if (rec.message.expiresAt !== undefined && isExpired(rec.message, Date.now())) {
      // Expired while waiting: dropped, never sent [MQTT-3.3.2-5].
      this.unhold(rec);
      if (group) this.broker.shares.settle(rec);
      else if (this.persistent) this.broker.persistence.deleteOutgoing(this.clientId, rec.seq);
      return;
    }
    const packetId = this.allocPacketId();
    const sent = outgoingRecord(rec);
    sent.state = 'inflight';
    sent.packetId = packetId;
    if (this.inflight === NO_INFLIGHT) this.inflight = new Map();
    this.inflight.set(packetId, sent);
    if (group) {
      // At QoS 2 the group's record names this member and packet id: after a crash the message is
      // re-sent to this member only, as the same packet [MQTT-4.8.2-4].
      if (rec.qos === 2) this.broker.shares.inFlight(this, sent);
    } else if (this.persistent) this.broker.persistence.putOutgoing(this.clientId, sent);
    // A stored QoS 2 message goes out only once its record is written: sent first, a crash before
    // the write would let the publisher's re-sent original (or, for a group, another member)
    // reach a client again under a new packet id. With the memory backend the callback runs at once.
    if (rec.qos === 2 && (this.persistent || group)) {
      this.broker.persistence.whenDurable(() => {
        try {
          // A connection gone by then leaves it in flight, re-sent when the client returns.
          if (this.conn === conn && !conn.closing && this.inflight.get(packetId) === sent) {
            this.publishNow(conn, sent, undefined);
          }
        } catch (err) {
          conn.fail(err, 'PUBLISH after store');
        }
      });
    } else this.publishNow(conn, sent, cache);
  }

  private publishNow(conn: Connection, sent: OutgoingRecord, cache: EncodeCache | undefined): void {
    const ok = conn.sendPublish(
      sent.message,
      sent.qos,
      sent.retain,
      sent.dup === true,
      sent.packetId!,
      sent.subscriptionIds,
      cache,
    );
    if (!ok) this.unsent(conn, sent);
  }

  /**
   * sendPublish refused a QoS 1/2 message. Above the client's Maximum Packet Size it is discarded
   * as if its delivery had completed [MQTT-3.1.2-25]: it must not hold a slot of the window or be
   * re-sent. On a closed connection it stays in flight, to be re-sent when the client returns.
   */
  private unsent(conn: Connection, rec: OutgoingRecord): void {
    if (conn.state === 'closed') return;
    this.inflight.delete(rec.packetId!);
    this.unhold(rec);
    if (rec.group !== undefined) this.broker.shares.settle(rec);
    else if (this.persistent) this.broker.persistence.deleteOutgoing(this.clientId, rec.seq);
  }

  private allocPacketId(): number {
    let id = this.nextPacketId;
    while (this.inflight.has(id)) id = id === 65535 ? 1 : id + 1;
    this.nextPacketId = id === 65535 ? 1 : id + 1;
    return id;
  }

  /** Fills the inflight window from the queue. */
  drain(): void {
    const conn = this.conn;
    if (!conn || this.loading !== null) return;
    const window = this.window;
    while (this.queueHead < this.queue.length && this.inflight.size < window && !conn.closing) {
      const rec = this.queue[this.queueHead];
      this.queue[this.queueHead++] = undefined as unknown as OutgoingRecord;
      this.send(rec);
    }
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
    // Spilled, and what memory held is sent: read what went to persistence meanwhile, in order.
    if (!this.loaded && this.queued === 0 && this.persistent) this.reload();
    // Room in the window: the shared groups this session belongs to may hand it waiting messages.
    if (this.shareGroups !== undefined) this.broker.shares.roomFor(this);
    this.checkRoom();
  }

  private reload(): void {
    this.load().then(
      () => this.drain(),
      (err: Error) => {
        this.broker.log.error({ err, clientId: this.clientId }, 'reading a spilled queue failed');
        this.conn?.close(RC.UNSPECIFIED_ERROR, 'reading the queue failed');
      },
    );
  }

  /**
   * PUBACK: QoS 1 delivery complete [MQTT-4.3.2], and the window slot is free whatever the reason
   * code. A shared group message answered with a reason code >= 0x80 (5.0) failed: its group
   * retries it (broker/shared/groups.ts).
   */
  onPuback(packetId: number, reasonCode = 0): boolean {
    const rec = this.inflight.get(packetId);
    if (rec?.qos !== 1) return false;
    if (rec.group !== undefined) {
      if (reasonCode >= 0x80) this.broker.shares.failed(this, rec, reasonCode);
      else this.broker.shares.settle(rec);
    }
    this.complete(packetId, rec);
    return true;
  }

  /** PUBREC: the first half of QoS 2; answered with PUBREL unless the receiver refused it. */
  onPubrec(packetId: number, reasonCode: number): 'pubrel' | 'done' | 'unknown' {
    const rec = this.inflight.get(packetId);
    if (rec?.qos !== 2) return 'unknown';
    if (reasonCode >= 0x80) {
      // A failed PUBREC ends the exchange; the packet id is free again.
      if (rec.group !== undefined) this.broker.shares.failed(this, rec, reasonCode);
      this.complete(packetId, rec);
      return 'done';
    }
    if (rec.state !== 'pubrel') {
      const next = outgoingRecord(rec);
      next.state = 'pubrel';
      if (rec.group !== undefined) {
        // The member has the message: its group is done with it, the session finishes the exchange.
        this.broker.shares.settle(rec);
        next.group = undefined;
      }
      this.inflight.set(packetId, next);
      if (this.persistent) this.broker.persistence.putOutgoing(this.clientId, next);
    }
    return 'pubrel';
  }

  /** PUBCOMP: QoS 2 delivery complete. */
  onPubcomp(packetId: number): boolean {
    const rec = this.inflight.get(packetId);
    if (rec?.state !== 'pubrel') return false;
    this.complete(packetId, rec);
    return true;
  }

  private complete(packetId: number, rec: OutgoingRecord): void {
    this.inflight.delete(packetId);
    if (this.loading !== null) {
      this.doneWhileLoading ??= new Set();
      this.doneWhileLoading.add(rec.seq);
    }
    this.unhold(rec);
    this.gate?.progress();
    if (this.persistent && rec.group === undefined)
      this.broker.persistence.deleteOutgoing(this.clientId, rec.seq);
    this.drain();
  }

  /**
   * A client resumed this session: load what persistence holds if needed, resend unacknowledged
   * PUBLISH (DUP=1) and PUBREL in their original order [MQTT-4.4.0-1], then fill the window.
   */
  async resume(): Promise<void> {
    if (!this.loaded) await this.load();
    const conn = this.conn;
    if (!conn) return;
    const pending = [...this.inflight.values()].sort((a, b) => a.seq - b.seq);
    for (const rec of pending) {
      if (rec.state === 'pubrel') conn.sendPubrel(rec.packetId!);
      else if (!conn.sendPublish(rec.message, rec.qos, rec.retain, true, rec.packetId!, rec.subscriptionIds))
        this.unsent(conn, rec);
    }
    this.drain();
  }

  /**
   * Reads the session's records from persistence: a persistent session one page at a time (the
   * window and the queue bound, so memory holds no more than it would have queued), the rest
   * staying there until this page is sent; a session resumed with expiry 0 all at once.
   */
  private async load(): Promise<void> {
    let done!: () => void;
    this.loading = new Promise<void>((r) => {
      done = r;
    });
    const p = this.broker.persistence;
    try {
      const paged = this.persistent;
      const limit = this.broker.options.maxInflight + Math.max(1, this.broker.options.maxQueued);
      const [stored, incoming] = await Promise.all([
        p.getOutgoing(this.clientId, paged ? limit : undefined, this.pagedTo > 0 ? this.pagedTo : undefined),
        p.getIncoming(this.clientId),
      ]);
      for (const id of incoming) this.rememberIncoming(id);
      const complete = !paged || stored.length < limit;
      // Records past this page stay in persistence, read with a later page, in order.
      const last = complete ? Number.POSITIVE_INFINITY : stored[stored.length - 1].seq;
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
      // above, to be read with the next page).
      if (!complete) this.pagedTo = last;
      this.storedBytes = complete ? 0 : Math.max(0, p.outgoingBytes(this.clientId) - this.heldBytes);
      // Resumed with Session Expiry 0: now that its records are in memory, none stays on disk,
      // but the will of the connection, which is stored with the session.
      if (!this.persistent) {
        p.deleteSession(this.clientId);
        if (this.conn?.will) this.broker.wills.connected(this.clientId, this.conn.will);
      }
    } finally {
      this.loading = null;
      done();
    }
  }

  /**
   * At start: a shared group's QoS 2 message that was in flight to this session, with its packet
   * id, re-sent (DUP=1) when the client resumes the session. False if the packet id is taken.
   */
  adoptGroupRecord(rec: OutgoingRecord): boolean {
    if (this.inflight.has(rec.packetId!)) return false;
    if (this.inflight === NO_INFLIGHT) this.inflight = new Map();
    this.inflight.set(rec.packetId!, rec);
    this.hold(rec);
    this.hasGroupRecords = true;
    return true;
  }

  /**
   * Removes and returns the shared group messages this session holds, in seq order, for their
   * groups to redeliver: queued ones and QoS 1 in flight; with `ending`, QoS 2 in flight too
   * (the caller discards those [MQTT-4.8.2-5]). Without it, QoS 2 in flight stays, to be completed
   * with this client when it reconnects [MQTT-4.8.2-4].
   */
  takeGroupRecords(ending: boolean): OutgoingRecord[] {
    if (!this.hasGroupRecords) return [];
    const out: OutgoingRecord[] = [];
    for (const [id, rec] of this.inflight) {
      if (rec.group !== undefined && (ending || rec.qos === 1)) {
        this.inflight.delete(id);
        this.unhold(rec);
        out.push(rec);
      }
    }
    let kept: OutgoingRecord[] | undefined;
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const rec = this.queue[i];
      if (rec.group !== undefined) {
        if (!kept) kept = this.queue.slice(this.queueHead, i);
        this.unhold(rec);
        out.push(rec);
      } else kept?.push(rec);
    }
    if (kept) {
      this.queue = kept;
      this.queueHead = 0;
    }
    if (ending) this.hasGroupRecords = false;
    return out.sort((a, b) => a.seq - b.seq);
  }
}
