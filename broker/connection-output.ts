import type { Duplex } from 'node:stream';
import { generate, type Packet } from 'mqtt-packet';
import type { QoS } from '../persistence/types.js';
import type { Broker } from './broker.js';
import { type EncodeCache, encodePublish } from './encode.js';
import type { Message } from './message.js';
import type { Session } from './session.js';

const V5 = { protocolVersion: 5 };
const V4 = { protocolVersion: 4 };

export type AckCmd = 'puback' | 'pubrec' | 'pubrel' | 'pubcomp';

/** Reading paused because the client does not read what we send. */
const PAUSE_WRITE = 1;
/** Reading paused because a queue this publisher feeds is full (backpressure). */
const PAUSE_FLOW = 2;
/** Reading paused because the client is over --max-publish-rate / --max-publish-bytes-rate. */
export const PAUSE_RATE = 4;

// A success acknowledgement differs from another only in its packet id: each form is encoded once
// by mqtt-packet, then copied with the two id bytes patched.
const ackTemplates = new Map<string, Buffer>();
function ackTemplate(cmd: AckCmd, version: number): Buffer {
  const key = cmd + version;
  let t = ackTemplates.get(key);
  if (!t) {
    t = generate({ cmd, messageId: 1 }, version === 5 ? V5 : V4);
    ackTemplates.set(key, t);
  }
  return t;
}

// Writes are collected per connection and handed to the stream once per tick, as one buffer:
// one nextTick for the whole fan-out, one write (and one system call) per connection, and none
// of the stream's per-chunk bookkeeping that cork/uncork would cost.
const pendingConnections: ConnectionOutput[] = [];
let flushScheduled = false;

function flushPending(): void {
  flushScheduled = false;
  for (let i = 0; i < pendingConnections.length; i++) {
    const c = pendingConnections[i];
    try {
      c.flush();
    } catch (err) {
      c.fail(err, 'write');
    }
  }
  pendingConnections.length = 0;
}

export type ConnectionState = 'new' | 'connecting' | 'connected' | 'closing' | 'closed';

/**
 * What a connection sends, one write per tick, and when it stops reading: because the client does
 * not read what we send, because a queue it publishes into is full (broker/flow.ts: its
 * acknowledgements wait too), or for its publish rate. Connection (broker/connection.ts) adds the
 * reading side and the protocol.
 */
export abstract class ConnectionOutput {
  state: ConnectionState = 'new';
  protocolVersion: 3 | 4 | 5 = 4;
  session: Session | null = null;
  /** The client's Maximum Packet Size (5.0). */
  maxOutboundPacket = Number.POSITIVE_INFINITY;
  /** Topic aliases we may use toward the client. */
  outAliasMax = 0;
  outAliases: Map<string, number> | undefined;
  /** Bytes written this tick, not yet handed to the stream. */
  private pending: Buffer[] | null = null;
  private pendingBytes = 0;
  protected backlog: Packet[] | null = null;
  /** Why reading is paused (PAUSE_* bits); the stream reads again once none is left. */
  protected pausedBy = 0;
  /** Full queues this publisher waits on (backpressure): not read from, acknowledgements held. */
  private blockedOn = 0;
  /** PUBACK / PUBREC held while blocked, in order: [cmd, packet id, reason code] per ack. */
  private heldAcks: (AckCmd | number)[] | null = null;

  constructor(
    readonly broker: Broker,
    readonly stream: Duplex,
  ) {}

  /** An exception in this connection's processing: it is closed, the broker goes on. */
  abstract fail(err: unknown, where: string): void;

  get closing(): boolean {
    return this.state === 'closing' || this.state === 'closed';
  }

  protected pauseReading(reason: number): void {
    if (this.pausedBy === 0) this.stream.pause();
    this.pausedBy |= reason;
  }

  protected resumeReading(reason: number): void {
    this.pausedBy &= ~reason;
    if (this.pausedBy === 0 && this.backlog === null && !this.closing) this.stream.resume();
  }

  /** Not read for its publish rate: the keep-alive sweep leaves it alone meanwhile. */
  get ratePaused(): boolean {
    return (this.pausedBy & PAUSE_RATE) !== 0;
  }

  get blocked(): boolean {
    return this.blockedOn > 0;
  }

  /** Another full queue this publisher feeds (broker/flow.ts): stop reading it, hold its acks. */
  block(): void {
    if (this.blockedOn++ === 0) this.pauseReading(PAUSE_FLOW);
  }

  /** A queue it fed has room again; with none left, held acknowledgements go out and reading resumes. */
  unblock(): void {
    if (this.blockedOn === 0 || --this.blockedOn > 0) return;
    const held = this.heldAcks;
    this.heldAcks = null;
    if (held !== null) {
      for (let i = 0; i < held.length; i += 3) {
        this.sendAck(held[i] as AckCmd, held[i + 1] as number, held[i + 2] as number);
      }
    }
    this.resumeReading(PAUSE_FLOW);
  }

  /**
   * PUBACK / PUBREC for an inbound PUBLISH. Held while the publisher is blocked, and behind any held
   * one, so acknowledgements keep the order of the PUBLISH packets [MQTT-4.6.0-2] [MQTT-4.6.0-3].
   */
  ackPublish(cmd: 'puback' | 'pubrec', packetId: number, reasonCode: number): void {
    if (this.blockedOn > 0 || this.heldAcks !== null) {
      if (this.heldAcks === null) this.heldAcks = [];
      this.heldAcks.push(cmd, packetId, reasonCode);
      return;
    }
    this.sendAck(cmd, packetId, reasonCode);
  }

  /** Sends any non-PUBLISH packet, encoded for this connection's protocol version. */
  send(packet: Packet, version: number = this.protocolVersion): void {
    if (this.state === 'closed') return;
    const buf = generate(packet, version === 5 ? V5 : V4);
    if (version === 5 && buf.length > this.maxOutboundPacket && 'properties' in packet && packet.properties) {
      // Reason strings and user properties are dropped rather than exceed the client's maximum [MQTT-3.1.2-25].
      const { properties: _p, ...bare } = packet;
      this.write(generate(bare as Packet, V5));
      return;
    }
    this.write(buf);
  }

  /** Sends a PUBLISH; returns false when it was not sent (too large for the client, or QoS 0 to a congested client). */
  sendPublish(
    msg: Message,
    qos: QoS,
    retain: boolean,
    dup: boolean,
    packetId: number,
    subIds: number[] | undefined,
    cache?: EncodeCache,
  ): boolean {
    if (this.state === 'closed') return false;
    if (qos === 0 && this.writableLength > this.broker.options.maxWriteBuffer) {
      this.broker.dropped(this.session, msg, 'slow consumer');
      return false;
    }
    let topicAlias: number | undefined;
    let aliasOnly = false;
    if (this.outAliasMax > 0) {
      this.outAliases ??= new Map();
      const known = this.outAliases.get(msg.topic);
      if (known !== undefined) {
        topicAlias = known;
        aliasOnly = true;
      } else if (this.outAliases.size < this.outAliasMax) {
        topicAlias = this.outAliases.size + 1;
        this.outAliases.set(msg.topic, topicAlias);
      }
    }
    const buf = encodePublish(
      msg,
      {
        version: this.protocolVersion,
        qos,
        retain,
        dup,
        packetId,
        subscriptionIds: subIds,
        topicAlias,
        aliasOnly,
      },
      cache,
    );
    if (buf.length > this.maxOutboundPacket) {
      // Never send a packet above the client's Maximum Packet Size; it is discarded [MQTT-3.1.2-24].
      if (topicAlias !== undefined && !aliasOnly) this.outAliases!.delete(msg.topic);
      this.broker.dropped(this.session, msg, 'larger than client maximum packet size');
      return false;
    }
    this.write(buf);
    const counters = this.broker.counters;
    counters.publishSent[qos]++;
    counters.publishBytesSent[qos] += buf.length;
    return true;
  }

  sendPubrel(packetId: number): void {
    this.sendAck('pubrel', packetId);
  }

  /** PUBACK, PUBREC, PUBREL or PUBCOMP; a 5.0 failure reason code goes in full. */
  sendAck(cmd: AckCmd, packetId: number, reasonCode = 0): void {
    if (this.state === 'closed') return;
    const t = ackTemplate(cmd, this.protocolVersion);
    if ((reasonCode !== 0 && this.protocolVersion === 5) || t.length !== 4) {
      this.send(reasonCode !== 0 ? { cmd, messageId: packetId, reasonCode } : { cmd, messageId: packetId });
      return;
    }
    const buf = Buffer.allocUnsafe(4);
    buf[0] = t[0];
    buf[1] = t[1];
    buf[2] = packetId >> 8;
    buf[3] = packetId & 0xff;
    this.write(buf);
  }

  write(buf: Buffer): void {
    const pending = this.pending;
    if (pending === null) {
      this.pending = [buf];
      pendingConnections.push(this);
      if (!flushScheduled) {
        flushScheduled = true;
        process.nextTick(flushPending);
      }
    } else pending.push(buf);
    this.pendingBytes += buf.length;
    this.broker.counters.packetsSent++;
    // Stop reading from a client that does not read what we send: its buffer stays bounded.
    if ((this.pausedBy & PAUSE_WRITE) === 0 && this.writableLength > this.broker.options.maxWriteBuffer * 2) {
      this.pauseReading(PAUSE_WRITE);
      this.stream.once('drain', () => this.resumeReading(PAUSE_WRITE));
    }
  }

  /** Bytes accepted for this client and not yet sent. */
  get writableLength(): number {
    return this.stream.writableLength + this.pendingBytes;
  }

  /** Hands this tick's writes to the stream (the tick's end, or before the stream is ended). */
  flush(): void {
    const pending = this.pending;
    if (pending === null) return;
    this.pending = null;
    const bytes = this.pendingBytes;
    this.pendingBytes = 0;
    const stream = this.stream;
    if (stream.destroyed || stream.writableEnded) return;
    this.broker.counters.bytesSent += bytes;
    stream.write(pending.length === 1 ? pending[0] : Buffer.concat(pending, bytes));
  }
}
