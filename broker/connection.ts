import type { Duplex } from 'node:stream';
import {
  parser as createParser,
  generate,
  type IDisconnectPacket,
  type Packet,
  type Parser,
} from 'mqtt-packet';
import type { QoS } from '../persistence/types.js';
import type { ClientInfo } from '../plugins/types.js';
import type { Broker } from './broker.js';
import { ByteQueue } from './byte-queue.js';
import type { PublishRate } from './client-limits.js';
import { type EncodeCache, encodePublish } from './encode.js';
import { dispatch } from './handlers/index.js';
import type { Message } from './message.js';
import { RC } from './reason-codes.js';
import type { Session } from './session.js';
import { strictParser } from './strict-parser.js';
import { checkArriving, packetSize, parseError } from './violations.js';

/** What the transport knows about a connection; kept on it for logs and hooks. */
export interface ConnectionInfo {
  transport: string;
  remoteAddress?: string;
  remotePort?: number;
  certificateSubject?: Record<string, string | string[]>;
}

/** A will as given in CONNECT, waiting for the connection to end. */
export interface PendingWill {
  message: Message;
  /** Will Delay Interval, seconds. */
  delay: number;
  /** Message Expiry Interval, seconds, counted from publication. */
  expiryInterval?: number;
}

type State = 'new' | 'connecting' | 'connected' | 'closing' | 'closed';

const V5 = { protocolVersion: 5 };
const V4 = { protocolVersion: 4 };

// Listeners are shared functions that find their connection through the emitter, rather than
// closures per connection: an idle connection is mostly the socket and a few small objects.
const kConn = Symbol('heron.connection');
type Owned = { [kConn]: Connection };

function onStreamData(this: Owned, chunk: Buffer): void {
  this[kConn].onData(chunk);
}
function onStreamError(this: Owned, err: Error): void {
  const c = this[kConn];
  c.broker.log.debug({ clientId: c.clientId, err: err.message }, 'socket error');
  c.terminate('socket error');
}
function onStreamEnd(this: Owned): void {
  this[kConn].terminate('connection closed by client');
}
function onStreamClose(this: Owned): void {
  this[kConn].terminate('connection closed');
}
function onParserPacket(this: Owned, p: Packet): void {
  this[kConn].onPacket(p);
}
function onParserError(this: Owned, err: Error): void {
  this[kConn].onParseError(err);
}
/** Our FIN is handed to the kernel: nothing more is due to the peer, which is not waited for. */
function destroyOnFinish(this: Duplex): void {
  this.destroy();
}

/** Reason codes a 5.0 CONNACK may carry (section 3.2.2.2), for a connection closed before it is accepted. */
const CONNACK_CODES = new Set<number>([
  RC.UNSPECIFIED_ERROR,
  RC.MALFORMED_PACKET,
  RC.PROTOCOL_ERROR,
  RC.IMPLEMENTATION_SPECIFIC_ERROR,
  RC.PACKET_TOO_LARGE,
  RC.QUOTA_EXCEEDED,
]);

type AckCmd = 'puback' | 'pubrec' | 'pubrel' | 'pubcomp';

/** Reading paused because the client does not read what we send. */
const PAUSE_WRITE = 1;
/** Reading paused because a queue this publisher feeds is full (backpressure). */
const PAUSE_FLOW = 2;
/** Reading paused because the client is over --max-publish-rate / --max-publish-bytes-rate. */
const PAUSE_RATE = 4;

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
const pendingConnections: Connection[] = [];
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

/**
 * One client connection over any Duplex stream: mqtt-packet parsing in, one write per tick out,
 * keep-alive, packet size limits and backpressure. Protocol handling lives in handlers/.
 */
export class Connection {
  readonly parser: Parser;
  state: State = 'new';
  protocolVersion: 3 | 4 | 5 = 4;
  clientId = '';
  username: string | undefined;
  session: Session | null = null;
  will: PendingWill | undefined;
  /** Outbound QoS 1/2 window: ours, or the client's Receive Maximum if lower. */
  outboundWindow: number;
  /** The client's Maximum Packet Size (5.0). */
  maxOutboundPacket = Number.POSITIVE_INFINITY;
  /** Topic aliases we may use toward the client and those it has set toward us. */
  outAliasMax = 0;
  outAliases: Map<string, number> | undefined;
  inAliases: Map<number, string> | undefined;
  /** Inbound QoS 1/2 publishes not yet fully acknowledged, against our Receive Maximum. */
  inboundUnacked = 0;
  /** Bytes written this tick, not yet handed to the stream. */
  private pending: Buffer[] | null = null;
  private pendingBytes = 0;
  private backlog: Packet[] | null = null;
  /** Why reading is paused (PAUSE_* bits); the stream reads again once none is left. */
  private pausedBy = 0;
  /** Full queues this publisher waits on (backpressure): not read from, acknowledgements held. */
  private blockedOn = 0;
  /** PUBACK / PUBREC held while blocked, in order: [cmd, packet id, reason code] per ack. */
  private heldAcks: (AckCmd | number)[] | null = null;
  /** Counted against --max-connections (see ClientLimits.admitted). */
  admitted = false;
  /** Inbound publish rate, when --max-publish-rate or --max-publish-bytes-rate is set (client-limits.ts). */
  publishRate: PublishRate | null = null;
  /** Epoch ms of the stream's creation and of the last bytes received (for the keep-alive sweep). */
  readonly createdAt = Date.now();
  lastSeen = this.createdAt;
  /** 1.5 times the keep-alive, in ms; 0 = no keep-alive. */
  keepaliveMs = 0;

  constructor(
    readonly broker: Broker,
    readonly stream: Duplex,
    readonly info: ConnectionInfo,
  ) {
    this.outboundWindow = broker.options.maxInflight;
    const parser = createParser();
    // mqtt-packet buffers input in a bl stream (a full Duplex that allocates a Buffer for every
    // byte or number it reads); ByteQueue has the same read API at a fraction of the memory and
    // allocations.
    (parser as unknown as { _list: unknown })._list = new ByteQueue();
    strictParser(parser);
    this.parser = parser;
    (parser as unknown as Owned)[kConn] = this;
    (stream as unknown as Owned)[kConn] = this;
    parser.on('packet', onParserPacket);
    parser.on('error', onParserError);
    stream.on('data', onStreamData);
    stream.on('error', onStreamError);
    stream.on('end', onStreamEnd);
    stream.on('close', onStreamClose);
  }

  get clientInfo(): ClientInfo {
    return {
      clientId: this.clientId,
      username: this.username,
      protocolVersion: this.protocolVersion,
      transport: this.info.transport,
      remoteAddress: this.info.remoteAddress,
      remotePort: this.info.remotePort,
      certificateSubject: this.info.certificateSubject,
    };
  }

  get closing(): boolean {
    return this.state === 'closing' || this.state === 'closed';
  }

  onData(chunk: Buffer): void {
    if (this.closing) return;
    this.lastSeen = Date.now();
    try {
      this.parser.parse(chunk);
      // A packet still arriving is judged by its fixed header where that suffices, so a violation
      // is closed at once rather than after a body that may never come.
      const arriving = (this.parser as unknown as { packet: Packet }).packet;
      if (arriving.cmd !== null && !this.closing) checkArriving(this, arriving.cmd, arriving.length ?? -1);
    } catch (err) {
      // The parser reports malformed input as an 'error' event: a throw is a bug, ours or its.
      this.fail(err, 'parsing');
    }
  }

  /** Largest packet accepted now: until CONNECT is in, only --max-connect-size is buffered. */
  maxIncoming(): number {
    const o = this.broker.options;
    return this.state === 'new' ? Math.min(o.maxConnectSize, o.maxPacketSize) : o.maxPacketSize;
  }

  onPacket(packet: Packet): void {
    if (this.closing) return;
    if (packet.length !== undefined && packetSize(packet.length) > this.maxIncoming()) {
      this.tooLarge();
      return;
    }
    if (this.backlog) {
      this.backlog.push(packet);
      return;
    }
    if (this.broker.log.isLevelEnabled('debug')) {
      this.broker.log.debug({ clientId: this.clientId, cmd: packet.cmd, id: packet.messageId }, 'packet in');
    }
    if (this.state === 'new') {
      if (packet.cmd !== 'connect') {
        // The first packet must be CONNECT [MQTT-3.1.0-1].
        this.terminate('first packet was not CONNECT');
        return;
      }
      this.state = 'connecting';
    }
    try {
      dispatch(this, packet);
    } catch (err) {
      this.fail(err, `${packet.cmd} handler`);
    }
  }

  /** Holds incoming packets while an asynchronous step (CONNECT) completes. */
  hold(): void {
    this.backlog ??= [];
    // Nothing more is read meanwhile: the backlog holds at most what one chunk carried.
    this.stream.pause();
  }

  release(): void {
    const backlog = this.backlog;
    this.backlog = null;
    if (backlog) for (const p of backlog) this.onPacket(p);
    if (this.pausedBy === 0 && !this.closing) this.stream.resume();
  }

  private pauseReading(reason: number): void {
    if (this.pausedBy === 0) this.stream.pause();
    this.pausedBy |= reason;
  }

  private resumeReading(reason: number): void {
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

  /** Stops or resumes reading for the publish rate (client-limits.ts chargePublish). */
  ratePause(on: boolean): void {
    if (on) return this.pauseReading(PAUSE_RATE);
    // Not read meanwhile is not silent: the keep-alive counts from now.
    this.lastSeen = Date.now();
    this.resumeReading(PAUSE_RATE);
  }

  onParseError(err: Error): void {
    if (!this.closing) parseError(this, err);
  }

  /**
   * An exception escaped code run for this connection (a handler, a hook, a callback): it is logged
   * with the client id and ends this connection only (5.0: DISCONNECT 0x80). Never throws.
   */
  fail(err: unknown, where: string): void {
    try {
      this.broker.log.error({ err, clientId: this.clientId, where }, 'exception, closing the connection');
      if (!this.closing) this.close(RC.UNSPECIFIED_ERROR, `exception in ${where}`);
      else if (!this.stream.destroyed) this.stream.destroy();
    } catch (again) {
      this.broker.log.error({ err: again, clientId: this.clientId, where }, 'exception while closing');
      this.state = 'closed';
      this.broker.connections.delete(this);
      this.stream.destroy();
    }
  }

  tooLarge(): void {
    // A CONNECT over --max-connect-size is closed without CONNACK: its version is not known yet,
    // and 5.0 section 3.1.4 lets a server close a connection whose CONNECT it does not accept.
    if (this.state === 'new') {
      this.broker.clientLimits.hit('connectSize', { address: this.info.remoteAddress });
      this.close(undefined, 'CONNECT too large', false);
      return;
    }
    this.close(RC.PACKET_TOO_LARGE, 'packet too large');
  }

  startKeepalive(seconds: number): void {
    // A client silent for 1.5 times its keep-alive is disconnected [MQTT-3.1.2-24]; the broker's
    // sweep checks lastSeen against this.
    this.keepaliveMs = seconds * 1500;
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
    stream.write(pending.length === 1 ? pending[0] : Buffer.concat(pending, bytes));
  }

  /**
   * Closes the connection: a 5.0 client is told why with DISCONNECT [MQTT-4.13.2-1]. Unless the
   * client asked for a normal disconnect, its will is published.
   */
  close(reasonCode: number | undefined, why: string, fireWill = true): void {
    if (this.closing) return;
    if (reasonCode !== undefined && this.protocolVersion === 5) {
      if (this.state === 'connected') {
        const d: IDisconnectPacket = { cmd: 'disconnect', reasonCode };
        this.send(d);
      } else if (this.state === 'connecting' && CONNACK_CODES.has(reasonCode)) {
        // No DISCONNECT before CONNACK: a CONNECT not yet answered is refused with the reason (section 4.13.2).
        this.send({ cmd: 'connack', reasonCode, sessionPresent: false });
      }
    }
    this.state = 'closing';
    this.flush();
    const stream = this.stream;
    stream.end();
    // Once what we wrote and our FIN are handed on, the connection is destroyed: a peer that keeps
    // its side open is not waited for. Reading on meanwhile (what arrives is ignored) keeps the
    // peer's late bytes from turning the close into a reset before our last packet is out.
    if (stream.writableFinished) stream.destroy();
    else stream.once('finish', destroyOnFinish);
    stream.resume();
    // A peer that does not read what we flushed holds 'finish' back: destroyed after a grace; the
    // unref'd timer never holds the process.
    setTimeout(() => stream.destroy(), 2000).unref();
    this.finish(why, fireWill);
  }

  /** The transport ended: clean up without writing anything. */
  terminate(why: string): void {
    try {
      if (this.state !== 'closing' && this.state !== 'closed') this.finish(why, true);
    } catch (err) {
      // Called from stream events: nothing may escape into the emitter.
      this.broker.log.error({ err, clientId: this.clientId }, 'exception while ending the connection');
    }
    this.state = 'closed';
    if (!this.stream.destroyed) this.stream.destroy();
  }

  private finish(why: string, fireWill: boolean): void {
    if (this.state !== 'closed' && this.state !== 'closing') this.state = 'closing';
    this.backlog = null;
    this.publishRate?.stop();
    this.broker.connectionEnded(this, why, fireWill);
  }
}
