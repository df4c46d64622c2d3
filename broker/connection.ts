import type { Duplex } from 'node:stream';
import { parser as createParser, type IDisconnectPacket, type Packet, type Parser } from 'mqtt-packet';
import type { ClientInfo } from '../plugins/types.js';
import type { Broker } from './broker.js';
import { ByteQueue } from './byte-queue.js';
import type { PublishRate } from './client-limits.js';
import { ConnectionOutput, PAUSE_RATE } from './connection-output.js';
import { dispatch } from './handlers/index.js';
import type { Message } from './message.js';
import { RC } from './reason-codes.js';
import { strictParser } from './strict-parser.js';
import type { ListenerSettings } from './transports/listeners.js';
import { checkArriving, packetSize, parseError } from './violations.js';

/** What the transport knows about a connection; kept on it for logs and hooks. */
export interface ConnectionInfo {
  transport: string;
  remoteAddress?: string;
  remotePort?: number;
  certificateSubject?: Record<string, string | string[]>;
  /** Set for listeners from BrokerOptions.listeners: their own settings apply at CONNECT. */
  listener?: ListenerSettings;
}

/** A will as given in CONNECT, waiting for the connection to end. */
export interface PendingWill {
  message: Message;
  /** Will Delay Interval, seconds. */
  delay: number;
  /** Message Expiry Interval, seconds, counted from publication. */
  expiryInterval?: number;
}

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

/**
 * One client connection over any Duplex stream: mqtt-packet parsing in, one write per tick out,
 * keep-alive, packet size limits and backpressure. Protocol handling lives in handlers/.
 */
export class Connection extends ConnectionOutput {
  readonly parser: Parser;
  clientId = '';
  username: string | undefined;
  will: PendingWill | undefined;
  /** Outbound QoS 1/2 window: ours, or the client's Receive Maximum if lower. */
  outboundWindow: number;
  /** Topic aliases the client has set toward us. */
  inAliases: Map<number, string> | undefined;
  /** Inbound QoS 1/2 publishes not yet fully acknowledged, against our Receive Maximum. */
  inboundUnacked = 0;
  /** Counted against --max-connections (see ClientLimits.admitted). */
  admitted = false;
  /** Inbound publish rate, when --max-publish-rate or --max-publish-bytes-rate is set (client-limits.ts). */
  publishRate: PublishRate | null = null;
  /** Epoch ms of the stream's creation and of the last bytes received (for the keep-alive sweep). */
  readonly createdAt = Date.now();
  lastSeen = this.createdAt;
  /** 1.5 times the keep-alive, in ms; 0 = no keep-alive. */
  keepaliveMs = 0;
  /** Counted in broker.counters.connected (from CONNACK to the connection's end). */
  counted = false;
  /** The enhanced-authentication method the client connected with (enhanced-auth.ts). */
  authMethod: string | undefined;
  /** A re-authentication waiting for the client's AUTH 0x18: the method's state. */
  reauth: { state: unknown } | undefined;
  /** Set while the AUTH exchange at CONNECT waits for the client's next packet. */
  private packetWaiter: ((p: Packet | null) => void) | null = null;

  constructor(
    broker: Broker,
    stream: Duplex,
    readonly info: ConnectionInfo,
  ) {
    super(broker, stream);
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

  private infoCache: ClientInfo | undefined;

  /** Frozen and kept once connected (hooks see it per message); built afresh before that. */
  get clientInfo(): ClientInfo {
    if (this.infoCache) return this.infoCache;
    const info: ClientInfo = {
      clientId: this.clientId,
      username: this.username,
      protocolVersion: this.protocolVersion,
      transport: this.info.transport,
      remoteAddress: this.info.remoteAddress,
      remotePort: this.info.remotePort,
      certificateSubject: this.info.certificateSubject,
    };
    if (this.state === 'connected') this.infoCache = Object.freeze(info);
    return info;
  }

  onData(chunk: Buffer): void {
    if (this.closing) return;
    this.lastSeen = Date.now();
    this.broker.counters.bytesReceived += chunk.length;
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
    this.broker.counters.packetsReceived++;
    if (packet.length !== undefined && packetSize(packet.length) > this.maxIncoming()) {
      this.tooLarge();
      return;
    }
    if (this.packetWaiter !== null) {
      const w = this.packetWaiter;
      this.packetWaiter = null;
      this.stream.pause();
      w(packet);
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

  /**
   * While held (CONNECT in progress): the next packet, read for the AUTH exchange rather than
   * queued; null once the connection ends.
   */
  nextPacket(): Promise<Packet | null> {
    const queued = this.backlog?.shift();
    if (queued) return Promise.resolve(queued);
    if (this.closing) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.packetWaiter = resolve;
      if (this.pausedBy === 0) this.stream.resume();
    });
  }

  release(): void {
    const backlog = this.backlog;
    this.backlog = null;
    if (backlog) for (const p of backlog) this.onPacket(p);
    // Unless a packet of the backlog started another asynchronous step (a hook): it releases.
    if (this.backlog === null && this.pausedBy === 0 && !this.closing) this.stream.resume();
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
    const waiter = this.packetWaiter;
    this.packetWaiter = null;
    waiter?.(null);
    this.publishRate?.stop();
    this.broker.connectionEnded(this, why, fireWill);
  }
}
