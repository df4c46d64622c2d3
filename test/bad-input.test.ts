/**
 * Protocol violations and corner cases the broker answers without closing the connection, over raw
 * sockets, one case per row: the bytes (or mqtt-packet packets) sent, the packets expected back;
 * then the connection must still answer PINGREQ. After every case a second, well-behaved mqtt.js
 * client on the same broker must still publish and receive, so a case also proves the broker did
 * not crash or wedge. Every case where the spec requires the connection to be closed is in
 * test/must-close.test.ts instead.
 *
 * Statement numbers follow the version under test: 3.1.1 ([MQTT-1.5.3-n], [MQTT-2.3.1-n], ...)
 * for protocol level 4, 5.0 ([MQTT-1.5.4-n], [MQTT-2.2.1-n], ...) for level 5. Where a rule has
 * no numbered statement the section is cited instead.
 */
import type { IConnectPacket, IPublishPacket, Packet } from 'mqtt-packet';
import { generate } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { seededRandom as prng } from '../bench/random.js';
import type { BrokerOptions } from '../broker/index.js';
import { RC } from '../broker/reason-codes.js';
import { connect, nextMessages, RawClient, startBroker } from './helpers.js';
import { type Bytes, frame, rawConnect, rawSubscribe, str } from './raw-frames.js';

type Version = 4 | 5;

/** What the broker must do: send these packets (matched in order), then close or stay open. */
interface Expectation {
  packets: Record<string, unknown>[];
  end: 'closed' | 'open';
}

interface Case {
  name: string;
  version: Version;
  /** Complete CONNECT/CONNACK before sending (default true). */
  connected?: boolean;
  /** Written to the socket as one chunk, in order; packets are encoded for `version`. */
  send: (Packet | Bytes)[];
  expect: Expectation;
  broker?: BrokerOptions;
}

const refused4 = (returnCode: number): Expectation => ({
  packets: [{ cmd: 'connack', returnCode, sessionPresent: false }],
  end: 'closed',
});
const answered = (...packets: Record<string, unknown>[]): Expectation => ({ packets, end: 'open' });

const connectPacket = (v: Version, over: Partial<IConnectPacket> = {}): IConnectPacket => ({
  cmd: 'connect',
  protocolId: 'MQTT',
  protocolVersion: v,
  clientId: 'second-connect',
  clean: true,
  keepalive: 0,
  ...over,
});

const pingreq: Packet = { cmd: 'pingreq' };

// --- the table --------------------------------------------------------------------------------

const cases: Case[] = [
  {
    name: 'v5: a password without a user name is allowed in 5.0 (section 3.1.2.9)',
    version: 5,
    connected: false,
    send: [rawConnect({ level: 5, flags: 0x02 | 0x40, tail: str('secret') })],
    expect: answered({ cmd: 'connack', reasonCode: 0 }),
  },
  {
    name: 'v4: empty client id with CleanSession 1 is accepted [MQTT-3.1.3-6]',
    version: 4,
    connected: false,
    send: [rawConnect({ clientId: '', flags: 0x02 })],
    expect: answered({ cmd: 'connack', returnCode: 0, sessionPresent: false }),
  },
  {
    name: 'v5: a packet of exactly the Maximum Packet Size is accepted (section 3.2.2.3.6)',
    version: 5,
    broker: { maxPacketSize: 128 },
    // 1 + 2 (Remaining Length 125) + 125 = 128 bytes.
    send: [frame(0x32, [...str('big'), 0, 7, 0, ...Buffer.alloc(125 - 8, 0x41)])],
    expect: answered({ cmd: 'puback', messageId: 7 }),
  },
  {
    name: 'v4: SUBSCRIBE "a/#/b" is refused in SUBACK (0x80), the connection stays [MQTT-4.7.1-2]',
    version: 4,
    send: [rawSubscribe(4, [['a/#/b', 0]], { id: 9 })],
    expect: answered({ cmd: 'suback', messageId: 9, granted: [0x80] }),
  },
  {
    name: 'v5: SUBSCRIBE "a+" next to a valid filter: SUBACK [0x8F, 0x01] [MQTT-4.7.1-2] [MQTT-3.9.3-1]',
    version: 5,
    send: [
      rawSubscribe(
        5,
        [
          ['a+', 0],
          ['ok/+', 1],
        ],
        { id: 9 },
      ),
    ],
    expect: answered({ cmd: 'suback', messageId: 9, granted: [RC.TOPIC_FILTER_INVALID, 1] }),
  },

  // Acknowledgements for packet ids the broker never used.
  {
    name: 'v4: PUBREL for an unknown id is still answered with PUBCOMP (section 4.3.3)',
    version: 4,
    send: [{ cmd: 'pubrel', messageId: 42 }],
    expect: answered({ cmd: 'pubcomp', messageId: 42 }),
  },
  {
    name: 'v5: PUBREL for an unknown id: PUBCOMP 0x92 [MQTT-4.3.3-11]',
    version: 5,
    send: [{ cmd: 'pubrel', messageId: 42 }],
    expect: answered({ cmd: 'pubcomp', messageId: 42, reasonCode: RC.PACKET_ID_NOT_FOUND }),
  },
  {
    name: 'v4: PUBACK for an unknown id is ignored (section 4.3.2)',
    version: 4,
    send: [{ cmd: 'puback', messageId: 42 }],
    expect: answered(),
  },
  {
    name: 'v5: PUBCOMP for an unknown id is ignored (section 4.3.3)',
    version: 5,
    send: [{ cmd: 'pubcomp', messageId: 42 }],
    expect: answered(),
  },
  {
    name: 'v5: PUBREC for an unknown id: PUBREL 0x92 (section 3.6.2.1)',
    version: 5,
    send: [{ cmd: 'pubrec', messageId: 42 }],
    expect: answered({ cmd: 'pubrel', messageId: 42, reasonCode: RC.PACKET_ID_NOT_FOUND }),
  },
];

// --- running a case ---------------------------------------------------------------------------

function encode(item: Packet | Bytes, v: Version): Buffer {
  if (Buffer.isBuffer(item)) return item;
  if (Array.isArray(item)) return Buffer.from(item);
  return generate(item, { protocolVersion: v });
}

/** A fresh pair of mqtt.js clients on the same broker still exchange a QoS 1 message. */
async function assertHealthy(url: string, protocolVersion: Version): Promise<void> {
  const sub = await connect(url, { protocolVersion });
  const pub = await connect(url, { protocolVersion });
  await sub.subscribeAsync('health/+', { qos: 1 });
  const got = nextMessages(sub, 1);
  await pub.publishAsync('health/check', 'still fine', { qos: 1 });
  const [m] = await got;
  expect(m.topic).toBe('health/check');
  expect(m.payload).toBe('still fine');
}

async function assertOutcome(raw: RawClient, e: Expectation): Promise<void> {
  for (const want of e.packets) expect(await raw.next()).toMatchObject(want);
  if (e.end === 'closed') {
    // Nothing more arrives and the connection ends: next() resolves null on 'close'.
    expect(await raw.next()).toBeNull();
  } else {
    raw.send(pingreq);
    expect(await raw.next()).toMatchObject({ cmd: 'pingresp' });
  }
}

describe('protocol violations over raw sockets', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const { port, url } = await startBroker(c.broker);
      const raw =
        c.connected === false
          ? await RawClient.open(port, c.version)
          : await RawClient.connected(port, c.version);
      raw.write(Buffer.concat(c.send.map((s) => encode(s, c.version))));
      await assertOutcome(raw, c.expect);
      await assertHealthy(url, c.version);
    }, 5000);
  }
});

describe('connection-level rules', () => {
  it('v4: two clients with empty client ids get distinct ids and both stay connected [MQTT-3.1.3-6]', async () => {
    const { broker, port, url } = await startBroker();
    const ids: string[] = [];
    broker.on('client', (info) => ids.push(info.clientId));
    const a = await RawClient.connected(port, 4, { clientId: '' });
    const b = await RawClient.connected(port, 4, { clientId: '' });
    expect(ids).toHaveLength(2);
    expect(ids[0]).not.toBe(ids[1]);
    // Neither took over the other's session.
    for (const c of [a, b]) {
      c.send(pingreq);
      expect(await c.next()).toMatchObject({ cmd: 'pingresp' });
    }
    await assertHealthy(url, 4);
  });

  it('v5: an empty client id gets an Assigned Client Identifier in CONNACK [MQTT-3.2.2-16]', async () => {
    const { broker, port, url } = await startBroker();
    const raw = await RawClient.open(port, 5);
    raw.send(connectPacket(5, { clientId: '' }));
    const ack = await raw.next();
    expect(ack).toMatchObject({ cmd: 'connack', reasonCode: 0 });
    const assigned = (ack as { properties?: { assignedClientIdentifier?: string } }).properties
      ?.assignedClientIdentifier;
    expect(assigned).toMatch(/.+/);
    expect(broker.sessions.has(assigned!)).toBe(true);
    await assertHealthy(url, 5);
  });

  it('v4: packets after a refused CONNECT are not processed [MQTT-3.1.4-6] (5.0 numbering)', async () => {
    const { broker, port, url } = await startBroker();
    const raw = await RawClient.open(port, 4);
    raw.write(
      Buffer.concat([
        rawConnect({ clientId: '', flags: 0x00 }),
        generate(
          { cmd: 'publish', topic: 'after/refusal', payload: 'x', qos: 0, retain: true, dup: false },
          { protocolVersion: 4 },
        ),
      ]),
    );
    await assertOutcome(raw, refused4(2));
    expect(broker.retained.size).toBe(0);
    await assertHealthy(url, 4);
  });

  it('v4: a CONNECT split across many one-byte writes is still accepted (section 4.2: a byte stream)', async () => {
    const { port, url } = await startBroker();
    const raw = await RawClient.open(port, 4);
    raw.socket.setNoDelay(true);
    for (const byte of rawConnect({ clientId: 'byte-by-byte' })) {
      raw.write([byte]);
      // Each byte leaves the socket before the next is written.
      await new Promise<void>((resolve) => raw.socket.write(Buffer.alloc(0), () => resolve()));
    }
    expect(await raw.next()).toMatchObject({ cmd: 'connack', returnCode: 0 });
    await assertHealthy(url, 4);
  });

  it('v5: a session written in random pieces (1-17 bytes) parses as written (section 4.2: a byte stream)', async () => {
    const { port, url } = await startBroker();
    const raw = await RawClient.open(port, 5);
    raw.socket.setNoDelay(true);
    const big = Buffer.alloc(70_000, 7); // a 3-byte Remaining Length
    const mid = Buffer.from(Array.from({ length: 300 }, (_, i) => i & 0xff)); // a 2-byte one
    const v5 = { protocolVersion: 5 } as const;
    const bytes = Buffer.concat([
      generate(
        {
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: 5,
          clientId: 'pieces',
          clean: true,
          keepalive: 0,
          properties: { sessionExpiryInterval: 60, userProperties: { a: 'b' } },
        },
        v5,
      ),
      generate(
        {
          cmd: 'subscribe',
          messageId: 1,
          subscriptions: [{ topic: 'pieces/#', qos: 2 }],
          properties: { subscriptionIdentifier: 300 },
        },
        v5,
      ),
      generate(
        {
          cmd: 'publish',
          topic: 'pieces/mid',
          payload: mid,
          qos: 1,
          messageId: 2,
          retain: false,
          dup: false,
          properties: { userProperties: { k: ['v1', 'v2'] }, correlationData: Buffer.from('corr') },
        },
        v5,
      ),
      generate({ cmd: 'publish', topic: 'pieces/big', payload: big, qos: 0, retain: false, dup: false }, v5),
      generate(
        {
          cmd: 'publish',
          topic: 'pieces/two',
          payload: 'q2',
          qos: 2,
          messageId: 3,
          retain: false,
          dup: false,
        },
        v5,
      ),
      generate({ cmd: 'pubrel', messageId: 3 }, v5),
      generate({ cmd: 'pingreq' }, v5),
    ]);
    const random = prng(42);
    for (let at = 0; at < bytes.length; ) {
      const n = 1 + Math.floor(random() * 17);
      raw.write(bytes.subarray(at, at + n));
      at += n;
      if (random() < 0.5)
        await new Promise<void>((resolve) => raw.socket.write(Buffer.alloc(0), () => resolve()));
    }
    const got: Packet[] = [];
    for (let p = await raw.next(); p !== null && p.cmd !== 'pingresp'; p = await raw.next()) got.push(p);
    const byCmd = (cmd: string) => got.filter((p) => p.cmd === cmd);
    expect(byCmd('connack')).toMatchObject([{ reasonCode: 0 }]);
    expect(byCmd('suback')).toMatchObject([{ messageId: 1, granted: [2] }]);
    expect(byCmd('puback')).toMatchObject([{ messageId: 2 }]);
    expect(byCmd('pubrec')).toMatchObject([{ messageId: 3 }]);
    expect(byCmd('pubcomp')).toMatchObject([{ messageId: 3 }]);
    const delivered = byCmd('publish') as IPublishPacket[];
    expect(delivered.map((p) => p.topic)).toEqual(['pieces/mid', 'pieces/big', 'pieces/two']);
    expect(Buffer.compare(delivered[0].payload as Buffer, mid)).toBe(0);
    expect(delivered[0].properties).toMatchObject({
      userProperties: { k: ['v1', 'v2'] },
      correlationData: Buffer.from('corr'),
      subscriptionIdentifier: 300,
    });
    expect(Buffer.compare(delivered[1].payload as Buffer, big)).toBe(0);
    expect(String(delivered[2].payload)).toBe('q2');
    await assertHealthy(url, 5);
  });
});
