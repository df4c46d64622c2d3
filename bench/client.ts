/**
 * A minimal MQTT 3.1.1 client for load generation: raw TCP sockets, mqtt-packet for encoding and
 * parsing, and as little work per message as possible so the generator stays cheaper than the
 * broker it measures.
 *
 * - PUBLISH packets are encoded once per (topic, QoS) by mqtt-packet into a template; each send
 *   copies the template and patches the packet id and the payload header in place.
 * - Acks are patched copies of 4-byte templates, also produced by mqtt-packet.
 * - Writes are collected until the event loop's check phase (setImmediate) and handed to the socket
 *   as one buffer: acks for everything read in one loop iteration leave in one syscall.
 * - Incoming QoS 1/2 are acknowledged (PUBACK; PUBREC, then PUBCOMP on PUBREL); outgoing QoS 2
 *   runs PUBLISH → PUBREC → PUBREL → PUBCOMP. `inflight` counts outgoing QoS 1/2 not yet finished.
 */
import net from 'node:net';
import { generate, type IPublishPacket, parser as mqttParser, type Packet, type QoS } from 'mqtt-packet';
import { writeHeader } from './payload.js';

export interface ConnectOptions {
  host: string;
  port: number;
  clientId: string;
  keepalive?: number;
  clean?: boolean;
  timeoutMs?: number;
  username?: string;
  password?: string;
}

/** Called for each PUBLISH received, after its acknowledgement has been queued. */
export type MessageHandler = (payload: Buffer, qos: QoS, dup: boolean) => void;

const PROTOCOL_VERSION = 4;

function ackTemplate(cmd: 'puback' | 'pubrec' | 'pubrel' | 'pubcomp'): Buffer {
  return generate({ cmd, messageId: 1 } as Packet, { protocolVersion: PROTOCOL_VERSION });
}
const PUBACK = ackTemplate('puback');
const PUBREC = ackTemplate('pubrec');
const PUBREL = ackTemplate('pubrel');
const PUBCOMP = ackTemplate('pubcomp');
const DISCONNECT = generate({ cmd: 'disconnect' }, { protocolVersion: PROTOCOL_VERSION });

function ack(template: Buffer, messageId: number): Buffer {
  const b = Buffer.allocUnsafe(template.length);
  template.copy(b);
  b.writeUInt16BE(messageId, template.length - 2);
  return b;
}

/** A PUBLISH encoded once; `build` stamps a packet id and the bench payload header on a copy. */
export class PublishTemplate {
  private readonly bytes: Buffer;
  private readonly payloadOffset: number;
  private readonly idOffset: number;

  constructor(
    readonly topic: string,
    readonly qos: QoS,
    readonly pubId: number,
    payloadSize: number,
  ) {
    const packet: IPublishPacket = {
      cmd: 'publish',
      topic,
      qos,
      retain: false,
      dup: false,
      payload: Buffer.alloc(payloadSize),
    };
    if (qos > 0) packet.messageId = 1;
    this.bytes = generate(packet, { protocolVersion: PROTOCOL_VERSION });
    this.payloadOffset = this.bytes.length - payloadSize;
    this.idOffset = this.payloadOffset - 2; // v3.1.1: the packet id sits right before the payload
  }

  build(messageId: number, seq: number, sentAt: number): Buffer {
    const b = Buffer.allocUnsafe(this.bytes.length);
    this.bytes.copy(b);
    if (this.qos > 0) b.writeUInt16BE(messageId, this.idOffset);
    writeHeader(b, this.payloadOffset, this.pubId, seq, sentAt);
    return b;
  }
}

interface Waiter {
  cmd: Packet['cmd'];
  messageId?: number;
  resolve: (p: Packet) => void;
  reject: (e: Error) => void;
}

// Outgoing packet-id states.
const FREE = 0;
const AWAIT_ACK = 1; // QoS 1 awaiting PUBACK, or QoS 2 awaiting PUBREC
const AWAIT_COMP = 2; // QoS 2 awaiting PUBCOMP

export class BenchClient {
  private readonly parser = mqttParser({ protocolVersion: PROTOCOL_VERSION });
  private out: Buffer[] = [];
  private outBytes = 0;
  private flushQueued = false;
  private waiters: Waiter[] = [];
  private readonly idState = new Uint8Array(65536);
  private nextId = 1;
  private closeError: Error | null = null;

  /** Outgoing QoS 1/2 publishes not yet acknowledged (PUBACK / PUBCOMP). */
  inflight = 0;
  /** True while the socket's buffer is above its high-water mark; wait for onDrain. */
  blocked = false;
  closed = false;
  /** Acks for unknown packet ids, unexpected packets: the broker misbehaved. */
  protocolErrors = 0;

  onMessage: MessageHandler | null = null;
  /** An outgoing QoS 1/2 publish finished (PUBACK, or PUBCOMP for QoS 2). */
  onComplete: (() => void) | null = null;
  onDrain: (() => void) | null = null;
  onClose: ((err: Error | null) => void) | null = null;

  private constructor(
    readonly socket: net.Socket,
    readonly clientId: string,
  ) {
    socket.setNoDelay(true);
    this.parser.on('packet', this.onPacket);
    this.parser.on('error', (err: Error) => socket.destroy(err));
    socket.on('data', (chunk: Buffer) => this.parser.parse(chunk));
    socket.on('drain', () => {
      this.blocked = false;
      this.onDrain?.();
    });
    socket.on('error', (err) => {
      this.closeError ??= err;
    });
    socket.on('close', () => {
      this.closed = true;
      const err = this.closeError ?? new Error(`${clientId}: connection closed`);
      for (const w of this.waiters.splice(0)) w.reject(err);
      this.onClose?.(this.closeError);
    });
  }

  /** Opens a TCP connection, sends CONNECT and resolves once a successful CONNACK arrives. */
  static async connect(o: ConnectOptions): Promise<BenchClient> {
    const socket = net.connect({ host: o.host, port: o.port });
    const client = new BenchClient(socket, o.clientId);
    const timeoutMs = o.timeoutMs ?? 10_000;
    const timer = setTimeout(() => socket.destroy(new Error(`${o.clientId}: CONNACK timeout`)), timeoutMs);
    try {
      const connack = client.expect('connack');
      client.send(
        generate(
          {
            cmd: 'connect',
            protocolId: 'MQTT',
            protocolVersion: PROTOCOL_VERSION,
            clientId: o.clientId,
            clean: o.clean ?? true,
            keepalive: o.keepalive ?? 0,
            ...(o.username !== undefined && { username: o.username }),
            ...(o.password !== undefined && { password: Buffer.from(o.password) }),
          },
          { protocolVersion: PROTOCOL_VERSION },
        ),
      );
      const p = (await connack) as Packet & { returnCode?: number };
      if (p.returnCode !== 0) throw new Error(`${o.clientId}: CONNACK return code ${p.returnCode}`);
      return client;
    } catch (err) {
      socket.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Subscribes to one filter; resolves with the granted QoS (rejects on 0x80). */
  async subscribe(filter: string, qos: QoS): Promise<number> {
    const messageId = this.allocId();
    this.idState[messageId] = FREE; // SUBSCRIBE ids are not tracked as publishes
    const suback = this.expect('suback', messageId);
    this.send(
      generate(
        { cmd: 'subscribe', messageId, subscriptions: [{ topic: filter, qos }] },
        { protocolVersion: PROTOCOL_VERSION },
      ),
    );
    const granted = ((await suback) as Packet & { granted: number[] }).granted[0];
    if (granted === 0x80 || granted === undefined)
      throw new Error(`${this.clientId}: SUBSCRIBE ${filter} refused`);
    return granted;
  }

  /** Queues a PUBLISH built from the template; for QoS 1/2 it counts in `inflight` until acked. */
  publish(template: PublishTemplate, seq: number, sentAt: number): void {
    let id = 0;
    if (template.qos > 0) {
      id = this.allocId();
      this.idState[id] = AWAIT_ACK;
      this.inflight++;
    }
    this.send(template.build(id, seq, sentAt));
  }

  /**
   * Writes one PUBLISH built from the template at once, in a socket write of its own (as a device
   * sends a message); QoS 1/2 count in `inflight` until acked.
   */
  publishNow(template: PublishTemplate, seq: number, sentAt: number): void {
    if (this.closed) return;
    let id = 0;
    if (template.qos > 0) {
      id = this.allocId();
      this.idState[id] = AWAIT_ACK;
      this.inflight++;
    }
    if (!this.socket.write(template.build(id, seq, sentAt))) this.blocked = true;
  }

  /** Queues bytes; everything queued in one loop iteration goes to the socket as one write. */
  send(buf: Buffer): void {
    if (this.closed) return;
    this.out.push(buf);
    this.outBytes += buf.length;
    if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(this.flush);
    }
  }

  /** Sends DISCONNECT, ends the socket and waits (bounded) for it to close. */
  async disconnect(timeoutMs = 2000): Promise<void> {
    if (this.closed) return;
    this.onClose = null;
    this.send(DISCONNECT);
    this.flush();
    this.socket.end();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.socket.destroy();
        resolve();
      }, timeoutMs);
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  destroy(): void {
    this.socket.destroy();
  }

  private readonly flush = (): void => {
    this.flushQueued = false;
    if (this.out.length === 0 || this.closed) return;
    const data = this.out.length === 1 ? this.out[0] : Buffer.concat(this.out, this.outBytes);
    this.out = [];
    this.outBytes = 0;
    if (!this.socket.write(data)) this.blocked = true;
  };

  private allocId(): number {
    for (let i = 0; i < 65535; i++) {
      const id = this.nextId;
      this.nextId = id === 65535 ? 1 : id + 1;
      if (this.idState[id] === FREE) return id;
    }
    throw new Error(`${this.clientId}: no free packet id`);
  }

  private expect(cmd: Packet['cmd'], messageId?: number): Promise<Packet> {
    if (this.closed)
      return Promise.reject(this.closeError ?? new Error(`${this.clientId}: connection closed`));
    return new Promise((resolve, reject) => this.waiters.push({ cmd, messageId, resolve, reject }));
  }

  private readonly onPacket = (p: Packet): void => {
    switch (p.cmd) {
      case 'publish': {
        const qos = p.qos;
        if (qos === 1) this.send(ack(PUBACK, p.messageId!));
        else if (qos === 2) this.send(ack(PUBREC, p.messageId!));
        this.onMessage?.(p.payload as Buffer, qos, p.dup);
        return;
      }
      case 'pubrel':
        this.send(ack(PUBCOMP, p.messageId!));
        return;
      case 'puback':
        this.finish(p.messageId!, AWAIT_ACK);
        return;
      case 'pubrec': {
        const id = p.messageId!;
        if (this.idState[id] === AWAIT_ACK) this.idState[id] = AWAIT_COMP;
        else if (this.idState[id] !== AWAIT_COMP) this.protocolErrors++;
        this.send(ack(PUBREL, id));
        return;
      }
      case 'pubcomp':
        this.finish(p.messageId!, AWAIT_COMP);
        return;
      default: {
        const i = this.waiters.findIndex(
          (w) => w.cmd === p.cmd && (w.messageId === undefined || w.messageId === p.messageId),
        );
        if (i >= 0) this.waiters.splice(i, 1)[0].resolve(p);
        else if (p.cmd !== 'pingresp') this.protocolErrors++;
      }
    }
  };

  private finish(id: number, expected: number): void {
    if (this.idState[id] !== expected) {
      this.protocolErrors++;
      return;
    }
    this.idState[id] = FREE;
    this.inflight--;
    this.onComplete?.();
  }
}
