import type { OutgoingRecord, QoS, SubscriptionRecord } from '../persistence/types.js';
import type { ClientInfo } from '../plugins/types.js';
import type { Broker } from './broker.js';
import type { Connection } from './connection.js';
import type { EncodeCache } from './encode.js';
import { isExpired, type Message, nextSeq, outgoingRecord, sizeOf } from './message.js';
import { RC } from './reason-codes.js';
import { NO_INFLIGHT, SessionQueue } from './session-queue.js';
import type { ShareGroup } from './shared/group.js';

// Shared empty collections: an idle session allocates none until it needs one.
const NO_SUBS: ReadonlyMap<string, SubscriptionRecord> = new Map();
const NO_IDS: ReadonlySet<number> = new Set();

/**
 * The state of one client identifier that outlives a connection: subscriptions, the outbound
 * inflight window and the ordered queue behind it, inbound QoS 2 packet ids, and expiry.
 */
export class Session extends SessionQueue {
  conn: Connection | null = null;
  /** The connection that resumed this session (CONNACK Session Present 1), if the current one did. */
  resumedBy: Connection | null = null;
  subscriptions: ReadonlyMap<string, SubscriptionRecord> = NO_SUBS;
  /** Inbound QoS 2 packet ids awaiting PUBREL. */
  incoming: ReadonlySet<number> = NO_IDS;
  private nextPacketId = 1;
  expiryTimer: NodeJS.Timeout | undefined;
  /** The shared subscription groups this session is a member of. */
  shareGroups: ShareGroup[] | undefined;
  /** Set once a group message was handed to this session: it may hold some (see takeGroupRecords). */
  hasGroupRecords = false;
  /** Its current or last connection's client info (set once connected), for authorizeDeliver. */
  lastClient: ClientInfo | undefined;

  // Scratch fields used by the router while it collects one publish's targets.
  stamp = 0;
  matchQos: QoS = 0;
  matchRetain = false;
  matchCovered = false;
  matchSubIds: number[] | undefined;

  constructor(
    broker: Broker,
    clientId: string,
    public protocolVersion: 3 | 4 | 5,
    public expiryInterval: number,
  ) {
    super(broker, clientId);
  }

  /** A session with a non-zero expiry outlives its connection and is written to persistence. */
  get persistent(): boolean {
    return this.expiryInterval > 0;
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

  /** What authorizeDeliver sees of a session restored from disk that has not connected since. */
  offlineInfo(): ClientInfo {
    this.lastClient ??= Object.freeze({
      clientId: this.clientId,
      protocolVersion: this.protocolVersion,
      transport: 'none',
    });
    return this.lastClient;
  }

  /**
   * Delivers a routed message at the given QoS (direct subscriptions and retained messages):
   * authorizeDeliver first, when a plugin registered it (one length check). Shared group copies
   * are not checked per delivery (their filter was authorized at SUBSCRIBE): they use place().
   * `covered`: the router found a subscription whose filter authorizeDeliver grants whole.
   */
  deliver(
    msg: Message,
    qos: QoS,
    retain: boolean,
    subIds: number[] | undefined,
    cache?: EncodeCache,
    covered = false,
  ): void {
    const plugins = this.broker.plugins;
    if (!covered && plugins.authorizeDeliver.length > 0 && !plugins.allowDeliver(this, msg.topic)) return;
    this.place(msg, qos, retain, subIds, cache);
  }

  /** Sends it now, queues it, or stores it for later. */
  place(msg: Message, qos: QoS, retain: boolean, subIds: number[] | undefined, cache?: EncodeCache): void {
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
    if ((!this.loaded && this.loading === null) || this.spilledWhileLoading) {
      // Offline (or spilled) and not loaded: the message lives only in persistence until the
      // client reads again, bounded in bytes.
      const size = sizeOf(msg);
      if (this.storedBytes + size > opts.maxQueuedBytes && !this.overflow(msg, false)) return;
      this.storedBytes += size;
      this.broker.persistence.putOutgoing(this.clientId, rec);
      this.broker.flow.spilled(this.broker.persistence);
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
        // order once memory's queue is sent; publishers are not held back for it. While a page is
        // being read, the load reads on past it (see load), and storedBytes still counts that
        // page (an over-count until the load recounts it).
        if (this.loading !== null) this.spilledWhileLoading = true;
        else {
          this.loaded = false;
          this.storedBytes = 0;
        }
        return this.place(msg, qos, retain, subIds);
      }
      if (!this.overflow(msg, true)) return;
    }
    if (this.persistent) this.broker.persistence.putOutgoing(this.clientId, rec);
    this.pagedTo = rec.seq;
    this.hold(rec);
    this.queue.push(rec);
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

  protected loadedIncoming(ids: number[]): void {
    for (const id of ids) this.rememberIncoming(id);
  }

  /** Resumed with Session Expiry 0: its records are in memory, none stays on disk but the will. */
  protected loadedAll(): void {
    this.broker.persistence.deleteSession(this.clientId);
    if (this.conn?.will) this.broker.wills.connected(this.clientId, this.conn.will);
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
