/**
 * Helpers for the spec-driven functional tests (qos, session, retained, will, subscribe,
 * flow-control, v5-properties): an inbox that records every message from the moment a client is
 * created, CONNACK access for mqtt.js and raw clients, and raw SUBSCRIBE/PUBLISH shorthands.
 */
import mqtt, { type IClientOptions, type IConnackPacket, type MqttClient } from 'mqtt';
import type { IConnectPacket, IDisconnectPacket, IPublishPacket, ISubackPacket, Packet } from 'mqtt-packet';
import { connectPacket, onCleanup, RawClient, type Received } from './helpers.js';

/**
 * Every message a client receives, in order, from its creation on (so messages a resumed session
 * sends right after CONNACK are not missed). take() and until() consume them in order.
 */
export class Inbox {
  readonly all: Received[] = [];
  private read = 0;
  private waiter: (() => void) | undefined;

  constructor(client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      this.all.push({ topic, payload: payload.toString(), packet });
      this.waiter?.();
    });
  }

  /** The next n messages not yet taken. */
  async take(n: number): Promise<Received[]> {
    while (this.all.length - this.read < n) await new Promise<void>((r) => (this.waiter = r));
    this.waiter = undefined;
    const out = this.all.slice(this.read, this.read + n);
    this.read += n;
    return out;
  }

  /**
   * Every message not yet taken up to and including the first on `topic` (a marker published
   * after whatever must not arrive: if it had been sent, it would be here before the marker).
   */
  async until(topic: string): Promise<Received[]> {
    for (;;) {
      const i = this.all.findIndex((m, k) => k >= this.read && m.topic === topic);
      if (i >= 0) {
        this.waiter = undefined;
        const out = this.all.slice(this.read, i + 1);
        this.read = i + 1;
        return out;
      }
      await new Promise<void>((r) => (this.waiter = r));
    }
  }

  /** Topics and payloads of messages, for compact assertions. */
  static brief(ms: Received[]): string[] {
    return ms.map((m) => `${m.topic}:${m.payload}`);
  }
}

export interface Connected {
  client: MqttClient;
  connack: IConnackPacket;
  inbox: Inbox;
}

/** An mqtt.js client (no auto-reconnect, ended after the test) with its CONNACK and an inbox. */
export async function connectAck(url: string, opts: IClientOptions = {}): Promise<Connected> {
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  onCleanup(() => client.endAsync(true));
  const inbox = new Inbox(client);
  const connack = await new Promise<IConnackPacket>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
  });
  return { client, connack, inbox };
}

/** A raw client's CONNECT answered: the client and the CONNACK (or whatever came instead). */
export async function rawConnect(
  port: number,
  version: 3 | 4 | 5,
  connect: Partial<IConnectPacket> = {},
): Promise<{ raw: RawClient; connack: Packet | null }> {
  const raw = await RawClient.open(port, version);
  raw.send(connectPacket(version, { protocolId: 'MQTT', ...connect }));
  return { raw, connack: await raw.next() };
}

/** Raw SUBSCRIBE; resolves with the SUBACK. */
export async function rawSubscribe(
  raw: RawClient,
  subscriptions: { topic: string; qos: 0 | 1 | 2; nl?: boolean; rap?: boolean; rh?: number }[],
  messageId = 1,
  properties?: ISubackPacket['properties'] & { subscriptionIdentifier?: number },
): Promise<ISubackPacket> {
  raw.send({ cmd: 'subscribe', messageId, subscriptions, ...(properties && { properties }) } as Packet);
  const ack = await raw.nextOf('suback');
  if (!ack) throw new Error('closed before SUBACK');
  return ack as ISubackPacket;
}

/** The next n packets a raw client receives, as PUBLISH packets (fails on anything else). */
export async function rawPublishes(raw: RawClient, n: number): Promise<IPublishPacket[]> {
  const out: IPublishPacket[] = [];
  for (let i = 0; i < n; i++) {
    const p = await raw.next();
    if (p?.cmd !== 'publish') throw new Error(`expected PUBLISH, got ${p?.cmd ?? 'close'}`);
    out.push(p);
  }
  return out;
}

/** The DISCONNECT an mqtt.js client receives from the broker. */
export function disconnectFrom(client: MqttClient): Promise<IDisconnectPacket> {
  return new Promise((resolve) => client.once('disconnect', resolve));
}

/** Resolves when an mqtt.js client's connection is closed. */
export function closed(client: MqttClient): Promise<void> {
  return new Promise((resolve) => client.once('close', () => resolve()));
}

export function uid(prefix: string): string {
  return `${prefix}-${Math.random().toString(16).slice(2, 10)}`;
}

/** CONNECT with a zero-length Client Identifier, hand-encoded (mqtt-packet refuses some of these). */
export function emptyIdConnect(version: 3 | 4 | 5, clean: boolean): Buffer {
  const name = version === 3 ? 'MQIsdp' : 'MQTT';
  const body = [0, name.length, ...Buffer.from(name), version, clean ? 0x02 : 0, 0, 0];
  if (version === 5) body.push(0); // Property Length 0
  body.push(0, 0); // Client Identifier of length 0
  return Buffer.from([0x10, body.length, ...body]);
}

/** A PUBLISH packet for raw clients: QoS 0, no retain or DUP unless `fields` says otherwise. */
export function publishPacket(
  topic: string,
  payload: string | Buffer,
  fields: Partial<IPublishPacket> = {},
): Packet {
  return {
    cmd: 'publish',
    topic,
    payload: Buffer.from(payload),
    qos: 0,
    retain: false,
    dup: false,
    ...fields,
  } as Packet;
}
