import assert from 'node:assert/strict';
import { connect as netConnect, type Socket } from 'node:net';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { parser as createParser, generate, type IConnectPacket, type Packet } from 'mqtt-packet';
import { afterEach } from 'vitest';
import { type Broker, type BrokerOptions, createBroker } from '../broker/index.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];

/** Registers teardown that runs after the current test, in reverse order. */
export function onCleanup(fn: () => Promise<unknown> | unknown): void {
  cleanups.push(fn);
}

afterEach(async () => {
  while (cleanups.length > 0) {
    try {
      await cleanups.pop()!();
    } catch {
      // teardown of something already gone
    }
  }
});

/** CLI flags for a spawned broker that binds only 127.0.0.1 on free ports and keeps state in memory. */
export const QUIET_CLI = [
  '--port',
  '0',
  '--host',
  '127.0.0.1',
  '--ws-port',
  '0',
  '--persistence',
  'memory',
  '--http-port',
  'off',
];

export interface TestBroker {
  broker: Broker;
  port: number;
  url: string;
}

/** A broker on 127.0.0.1 and a free port, closed after the test. */
export async function startBroker(opts: BrokerOptions = {}): Promise<TestBroker> {
  const broker = createBroker({ port: 0, host: '127.0.0.1', logLevel: 'silent', ...opts });
  await broker.listen();
  onCleanup(() => broker.close());
  const port = broker.port();
  return { broker, port, url: `mqtt://127.0.0.1:${port}` };
}

/** An mqtt.js client that does not reconnect by itself, ended after the test. */
/** Resolves once the broker has seen this client's connection end (register before ending it). */
export function disconnected(broker: Broker, clientId: string): Promise<void> {
  return new Promise((resolve) => {
    const on = (c: { clientId: string }) => {
      if (c.clientId !== clientId) return;
      broker.off('clientDisconnect', on);
      resolve();
    };
    broker.on('clientDisconnect', on);
  });
}

export async function connect(url: string, opts: IClientOptions = {}): Promise<MqttClient> {
  const client = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  onCleanup(() => client.endAsync(true));
  return client;
}

export interface Received {
  topic: string;
  payload: string;
  packet: mqtt.IPublishPacket;
}

/** Resolves with the next n messages a client receives. */
export function nextMessages(client: MqttClient, n: number): Promise<Received[]> {
  return new Promise((resolve) => {
    const got: Received[] = [];
    const on = (topic: string, payload: Buffer, packet: mqtt.IPublishPacket) => {
      got.push({ topic, payload: payload.toString(), packet });
      if (got.length === n) {
        client.off('message', on);
        resolve(got);
      }
    };
    client.on('message', on);
  });
}

/** Resolves when the emitter emits the event, with its first argument. */
export function once<T = unknown>(emitter: NodeJS.EventEmitter, event: string): Promise<T> {
  return new Promise((resolve) => emitter.once(event, (v: T) => resolve(v)));
}

/** A CONNECT with a random client id, clean, no keep-alive, and any field overridden. */
export function connectPacket(version: 3 | 4 | 5, fields: Partial<IConnectPacket> = {}): Packet {
  return {
    cmd: 'connect',
    protocolId: version === 3 ? 'MQIsdp' : 'MQTT',
    protocolVersion: version,
    clientId: `raw-${Math.random().toString(16).slice(2)}`,
    clean: true,
    keepalive: 0,
    ...fields,
  } as Packet;
}

/**
 * A client speaking raw packets built with mqtt-packet, for protocol corners and violations.
 * Every packet received is queued; next() takes them in order.
 */
export class RawClient {
  readonly socket: Socket;
  private readonly queue: Packet[] = [];
  private waiters: ((p: Packet | null) => void)[] = [];
  private ended = false;
  readonly closed: Promise<void>;

  private constructor(
    socket: Socket,
    public version: 3 | 4 | 5,
  ) {
    this.socket = socket;
    const parser = createParser({ protocolVersion: version });
    parser.on('packet', (p: Packet) => {
      const w = this.waiters.shift();
      if (w) w(p);
      else this.queue.push(p);
    });
    socket.on('data', (d) => parser.parse(d));
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.ended = true;
        for (const w of this.waiters.splice(0)) w(null);
        resolve();
      });
    });
    socket.on('error', () => undefined);
  }

  static async open(port: number, version: 3 | 4 | 5 = 4): Promise<RawClient> {
    const socket = netConnect(port, '127.0.0.1');
    await once(socket, 'connect');
    const c = new RawClient(socket, version);
    onCleanup(() => socket.destroy());
    return c;
  }

  /** Opens a connection and completes CONNECT/CONNACK. */
  static async connected(
    port: number,
    version: 3 | 4 | 5 = 4,
    connect: Partial<IConnectPacket> = {},
  ): Promise<RawClient> {
    const c = await RawClient.open(port, version);
    c.send(connectPacket(version, connect));
    const ack = await c.next();
    assert.equal(ack?.cmd, 'connack', 'the broker answers CONNECT with CONNACK');
    return c;
  }

  send(packet: Packet): void {
    this.socket.write(generate(packet, { protocolVersion: this.version }));
  }

  write(bytes: Buffer | number[]): void {
    this.socket.write(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes));
  }

  /** The next packet received, or null once the connection is closed. */
  next(): Promise<Packet | null> {
    const p = this.queue.shift();
    if (p) return Promise.resolve(p);
    if (this.ended) return Promise.resolve(null);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Skips packets until one with this cmd arrives (null if the connection closes first). */
  async nextOf(cmd: Packet['cmd']): Promise<Packet | null> {
    for (;;) {
      const p = await this.next();
      if (p === null || p.cmd === cmd) return p;
    }
  }
}
