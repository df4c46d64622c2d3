import type { IClientPublishOptions } from 'mqtt';
import { generate, type IConnackPacket, type IPublishPacket } from 'mqtt-packet';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { BrokerOptions, Message } from '../broker/index.js';
import { connect, RawClient, startBroker } from './helpers.js';
import { connectAck, Inbox, publishPacket, rawConnect, uid } from './spec-helpers.js';

const V5 = { protocolVersion: 5 } as const;

const rawPublish = publishPacket;

describe('application message properties pass through unchanged', () => {
  const properties = {
    payloadFormatIndicator: true,
    contentType: 'application/json; charset=utf-8',
    responseTopic: 'reply/to/me',
    correlationData: Buffer.from([0, 1, 2, 254, 255]),
    userProperties: { zeta: 'first', alpha: ['1', '2'], mid: 'x' },
  };
  const expectSame = (p: IPublishPacket['properties']) => {
    expect(p?.payloadFormatIndicator).toBe(true); // [MQTT-3.3.2-4]
    expect(p?.contentType).toBe(properties.contentType); // [MQTT-3.3.2-20]
    expect(p?.responseTopic).toBe(properties.responseTopic); // [MQTT-3.3.2-15]
    expect(Buffer.from(p!.correlationData!)).toEqual(properties.correlationData); // [MQTT-3.3.2-16]
    expect(p?.userProperties).toEqual(properties.userProperties); // [MQTT-3.3.2-17]
    expect(Object.keys(p!.userProperties!)).toEqual(['zeta', 'alpha', 'mid']); // order [MQTT-3.3.2-18]
  };

  for (const qos of [0, 1, 2] as const) {
    it(`QoS ${qos}, live [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20]`, async () => {
      const { url } = await startBroker();
      const { client: sub, inbox } = await connectAck(url, V5);
      await sub.subscribeAsync('pp/t', { qos: 2 });
      const pub = await connect(url, V5);
      await pub.publishAsync('pp/t', '{"a":1}', { qos, properties });
      const [m] = await inbox.take(1);
      expectSame(m.packet.properties);
    });
  }

  it('retained, sent on subscribe', async () => {
    const { url } = await startBroker();
    const pub = await connect(url, V5);
    await pub.publishAsync('pp/r', '{"a":1}', { qos: 1, retain: true, properties });
    const { client: sub, inbox } = await connectAck(url, V5);
    await sub.subscribeAsync('pp/r', { qos: 1 });
    const [m] = await inbox.take(1);
    expect(m.packet.retain).toBe(true);
    expectSame(m.packet.properties);
  });

  it('a payload that is not UTF-8 despite Payload Format Indicator 1 → PUBACK 0x99, not forwarded (§3.3.2.3.2)', async () => {
    const { port, url } = await startBroker();
    const { client: sub, inbox } = await connectAck(url, V5);
    await sub.subscribeAsync(['pp/#'], { qos: 1 });
    const { raw } = await rawConnect(port, 5);
    const bad = Buffer.from([0xc3, 0x28, 0xff]);
    raw.send(
      rawPublish('pp/bad', bad, { qos: 1, messageId: 1, properties: { payloadFormatIndicator: true } }),
    );
    expect(await raw.next()).toMatchObject({ cmd: 'puback', messageId: 1, reasonCode: 0x99 });
    raw.send(
      rawPublish('pp/ok', 'fine', { qos: 1, messageId: 2, properties: { payloadFormatIndicator: true } }),
    );
    expect(await raw.next()).toMatchObject({ cmd: 'puback', messageId: 2 });
    expect(Inbox.brief(await inbox.until('pp/ok'))).toEqual(['pp/ok:fine']);
  });
});

describe('Message Expiry Interval', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('forwarded at once with the interval it was published with [MQTT-3.3.2-6]', async () => {
    const { url } = await startBroker();
    const { client: sub, inbox } = await connectAck(url, V5);
    await sub.subscribeAsync('me/t', { qos: 1 });
    const pub = await connect(url, V5);
    await pub.publishAsync('me/t', 'x', { qos: 1, properties: { messageExpiryInterval: 60 } });
    await pub.publishAsync('me/t', 'y', { qos: 1 });
    const got = await inbox.take(2);
    expect(got.map((m) => m.packet.properties?.messageExpiryInterval)).toEqual([60, undefined]);
  });

  it('counted down while queued for an offline session; expired messages dropped [MQTT-3.3.2-5] [MQTT-3.3.2-6]', async () => {
    // Only Date is faked: sockets and timers run for real, the clock jumps forward on demand.
    vi.useFakeTimers({ toFake: ['Date'] });
    const { url, broker } = await startBroker();
    const clientId = uid('me');
    const opts = { ...V5, clientId, clean: false, properties: { sessionExpiryInterval: 600 } };
    const a = await connectAck(url, opts);
    await a.client.subscribeAsync('me/#', { qos: 1 });
    await a.client.endAsync();
    await vi.waitFor(() => expect(broker.sessions.get(clientId)?.conn).toBeNull());
    const pub = await connect(url, V5);
    const plan: [string, IClientPublishOptions][] = [
      ['short', { qos: 1, properties: { messageExpiryInterval: 2 } }],
      ['long', { qos: 1, properties: { messageExpiryInterval: 30 } }],
      ['none', { qos: 1 }],
    ];
    for (const [payload, o] of plan) await pub.publishAsync('me/q', payload, o);
    vi.setSystemTime(Date.now() + 10_000);
    const b = await connectAck(url, opts);
    expect(b.connack.sessionPresent).toBe(true);
    await pub.publishAsync('me/marker', 'm', { qos: 1 });
    const got = await b.inbox.until('me/marker');
    expect(got.map((m) => [m.payload, m.packet.properties?.messageExpiryInterval])).toEqual([
      ['long', 20],
      ['none', undefined],
      ['m', undefined],
    ]);
  });
});

describe('Topic Alias, client → broker', () => {
  it('an alias set with a topic stands for it until remapped (§3.3.2.3.4) [MQTT-3.3.2-12]', async () => {
    const { port, url } = await startBroker({ topicAliasMaximum: 2 });
    const { client: sub, inbox } = await connectAck(url, V5);
    await sub.subscribeAsync('al/#', { qos: 1 });
    const { raw, connack } = await rawConnect(port, 5);
    expect((connack as IConnackPacket).properties?.topicAliasMaximum).toBe(2);
    raw.send(rawPublish('al/a', 'one', { properties: { topicAlias: 1 } }));
    raw.send(rawPublish('', 'two', { properties: { topicAlias: 1 } }));
    raw.send(rawPublish('al/b', 'three', { properties: { topicAlias: 1 } }));
    raw.send(rawPublish('al/c', 'four', { properties: { topicAlias: 2 } }));
    raw.send(rawPublish('', 'five', { properties: { topicAlias: 1 } }));
    raw.send(rawPublish('', 'six', { properties: { topicAlias: 2 } }));
    expect(Inbox.brief(await inbox.take(6))).toEqual([
      'al/a:one',
      'al/a:two',
      'al/b:three',
      'al/c:four',
      'al/b:five',
      'al/c:six',
    ]);
  });

  const errors: [string, BrokerOptions, (raw: RawClient) => void, number][] = [
    [
      'alias above our Topic Alias Maximum → 0x94 [MQTT-3.3.2-9]',
      { topicAliasMaximum: 2 },
      (r) => r.send(rawPublish('x', 'p', { properties: { topicAlias: 3 } })),
      0x94,
    ],
    [
      'alias 0 → 0x94 [MQTT-3.3.2-8]',
      {},
      (r) => r.send(rawPublish('x', 'p', { properties: { topicAlias: 0 } })),
      0x94,
    ],
    [
      'any alias when our maximum is 0 → 0x94 [MQTT-3.2.2-18]',
      { topicAliasMaximum: 0 },
      (r) => r.send(rawPublish('x', 'p', { properties: { topicAlias: 1 } })),
      0x94,
    ],
    [
      'an alias never set, with an empty topic → 0x82 (§3.3.2.3.4)',
      {},
      (r) => r.send(rawPublish('', 'p', { properties: { topicAlias: 1 } })),
      0x82,
    ],
  ];
  for (const [name, opts, send, code] of errors) {
    it(name, async () => {
      const { port } = await startBroker(opts);
      const { raw } = await rawConnect(port, 5);
      send(raw);
      expect(await raw.next()).toMatchObject({ cmd: 'disconnect', reasonCode: code });
      expect(await raw.next()).toBeNull();
    });
  }

  it('aliases do not carry over to a new connection [MQTT-3.3.2-7]', async () => {
    const { port } = await startBroker();
    const clientId = uid('al');
    const first = await rawConnect(port, 5, { clientId });
    first.raw.send(rawPublish('al/x', 'p', { properties: { topicAlias: 1 } }));
    first.raw.send({ cmd: 'disconnect', reasonCode: 0 });
    await first.raw.closed;
    const second = await rawConnect(port, 5, { clientId });
    second.raw.send(rawPublish('', 'p', { properties: { topicAlias: 1 } }));
    expect(await second.raw.next()).toMatchObject({ cmd: 'disconnect', reasonCode: 0x82 });
  });
});

describe('Topic Alias, broker → client', () => {
  const cases = [
    {
      clientMax: 5,
      topics: ['a', 'a', 'b', 'a'],
      sent: [
        ['a', 1],
        ['', 1],
        ['b', 2],
        ['', 1],
      ],
    },
    // Never above the client's maximum [MQTT-3.3.2-11] [MQTT-3.1.2-26]: "b" goes by name.
    {
      clientMax: 1,
      topics: ['a', 'b', 'a', 'b'],
      sent: [
        ['a', 1],
        ['b', undefined],
        ['', 1],
        ['b', undefined],
      ],
    },
    // No Topic Alias Maximum from the client: no aliases at all [MQTT-3.1.2-27].
    {
      clientMax: undefined,
      topics: ['a', 'a'],
      sent: [
        ['a', undefined],
        ['a', undefined],
      ],
    },
  ] as const;
  for (const c of cases) {
    it(`client Topic Alias Maximum ${c.clientMax}: ${c.topics.join(',')}`, async () => {
      const { url } = await startBroker();
      const { client: sub, inbox } = await connectAck(url, {
        ...V5,
        ...(c.clientMax && { properties: { topicAliasMaximum: c.clientMax } }),
      });
      await sub.subscribeAsync(['a', 'b'], { qos: 1 });
      const pub = await connect(url, V5);
      for (const t of c.topics) await pub.publishAsync(t, `to ${t}`, { qos: 1 });
      const got = await inbox.take(c.topics.length);
      // mqtt.js resolves the alias back to the topic; the packet shows what was on the wire.
      expect(got.map((m) => m.topic)).toEqual(c.topics);
      expect(got.map((m) => [m.packet.topic, m.packet.properties?.topicAlias])).toEqual(c.sent);
    });
  }
});

describe('Maximum Packet Size', () => {
  it('a message larger than the client maximum is not sent; a smaller one after it is [MQTT-3.1.2-24] [MQTT-3.1.2-25]', async () => {
    // A window of 1: the discarded QoS 1 message must not keep its slot ("as if it had completed").
    const { url, broker } = await startBroker({ maxInflight: 1 });
    const clientId = uid('mps');
    const { client: sub, inbox } = await connectAck(url, {
      ...V5,
      clientId,
      properties: { maximumPacketSize: 128 },
    });
    await sub.subscribeAsync('mps/t', { qos: 1 });
    const drops: string[] = [];
    broker.on('drop', (_id: string | null, msg: Message) => drops.push(msg.payload.toString().slice(0, 5)));
    const pub = await connect(url, V5);
    await pub.publishAsync('mps/t', 'big..'.padEnd(500, '.'), { qos: 1 });
    await pub.publishAsync('mps/t', 'small', { qos: 1 });
    await pub.publishAsync('mps/t', 'big..'.padEnd(500, '.'), { qos: 0 });
    await pub.publishAsync('mps/t', 'last', { qos: 0 });
    expect(Inbox.brief(await inbox.take(2))).toEqual(['mps/t:small', 'mps/t:last']);
    expect(drops).toEqual(['big..', 'big..']);
    expect(broker.stats.messagesDropped).toBe(2);
    // Discarded "as if it had completed sending": nothing is left in flight for it.
    await vi.waitFor(() => expect(broker.sessions.get(clientId)?.inflight.size).toBe(0));
  });

  it('CONNACK advertises ours; a packet of exactly that size is accepted, one byte more → DISCONNECT 0x95 (§3.2.2.3.6)', async () => {
    const { port } = await startBroker({ maxPacketSize: 256 });
    const { raw, connack } = await rawConnect(port, 5);
    expect((connack as IConnackPacket).properties?.maximumPacketSize).toBe(256);
    const sized = (n: number) => {
      const p = rawPublish('mp', '', { qos: 1, messageId: 1 });
      const overhead = generate(p, V5).length + 1; // a payload over 127 bytes adds a length byte
      return rawPublish('mp', 'x'.repeat(n - overhead), { qos: 1, messageId: 1 });
    };
    expect(generate(sized(256), V5).length).toBe(256);
    raw.send(sized(256));
    expect(await raw.next()).toMatchObject({ cmd: 'puback', messageId: 1 });
    raw.send(sized(257));
    expect(await raw.next()).toMatchObject({ cmd: 'disconnect', reasonCode: 0x95 });
    expect(await raw.next()).toBeNull();
  });

  it('v4: a packet above our maximum closes the connection', async () => {
    const { port } = await startBroker({ maxPacketSize: 256 });
    const raw = await RawClient.connected(port, 4);
    raw.send(rawPublish('mp', 'x'.repeat(1000), { qos: 1, messageId: 1 }));
    expect(await raw.next()).toBeNull();
  });
});

describe('Server Keep Alive', () => {
  const cases = [
    { keepalive: 60, server: 10, why: 'above the maximum: lowered [MQTT-3.2.2-21]' },
    { keepalive: 0, server: 10, why: '0 (none) is above any maximum' },
    {
      keepalive: 5,
      server: undefined,
      why: 'within the maximum: not sent, the client value stands [MQTT-3.2.2-22]',
    },
  ];
  for (const c of cases) {
    it(`maxKeepalive 10, client ${c.keepalive}: ${c.why}`, async () => {
      const { port } = await startBroker({ maxKeepalive: 10 });
      const { connack } = await rawConnect(port, 5, { keepalive: c.keepalive });
      expect((connack as IConnackPacket).properties?.serverKeepAlive).toBe(c.server);
    });
  }

  it('the broker enforces the Server Keep Alive it sent: 1 s → DISCONNECT 0x8D after 1.5 s [MQTT-3.1.2-22]', async () => {
    const { port } = await startBroker({ maxKeepalive: 1 });
    const { raw, connack } = await rawConnect(port, 5, { keepalive: 60 });
    expect((connack as IConnackPacket).properties?.serverKeepAlive).toBe(1);
    const t0 = Date.now();
    expect(await raw.next()).toMatchObject({ cmd: 'disconnect', reasonCode: 0x8d });
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('v4 cannot be told a lower value: above the maximum is refused with 0x02, like Mosquitto', async () => {
    const { port } = await startBroker({ maxKeepalive: 10 });
    const { connack } = await rawConnect(port, 4, { keepalive: 60 });
    expect(connack).toMatchObject({ cmd: 'connack', returnCode: 2 });
  });
});

describe('CONNACK properties (§3.2.2.3)', () => {
  /** What the CONNACK tells the client, absent properties read with their spec defaults. */
  const advertised = (p: IConnackPacket['properties'] = {}) => ({
    receiveMaximum: p.receiveMaximum ?? 65535,
    maximumQoS: p.maximumQoS ?? 2,
    retainAvailable: p.retainAvailable ?? true,
    maximumPacketSize: p.maximumPacketSize ?? Number.POSITIVE_INFINITY,
    topicAliasMaximum: p.topicAliasMaximum ?? 0,
    wildcardSubscriptionAvailable: p.wildcardSubscriptionAvailable ?? true,
    subscriptionIdentifiersAvailable: p.subscriptionIdentifiersAvailable ?? true,
    sharedSubscriptionAvailable: p.sharedSubscriptionAvailable ?? true,
  });
  const cases: [string, BrokerOptions, Partial<ReturnType<typeof advertised>>][] = [
    ['defaults', {}, { receiveMaximum: 65535, maximumPacketSize: 1024 * 1024, topicAliasMaximum: 64 }],
    [
      'configured',
      { receiveMaximum: 10, maxPacketSize: 4096, topicAliasMaximum: 0 },
      { receiveMaximum: 10, maximumPacketSize: 4096, topicAliasMaximum: 0 },
    ],
  ];
  for (const [name, opts, expected] of cases) {
    it(name, async () => {
      const { url } = await startBroker(opts);
      const { connack } = await connectAck(url, V5);
      expect(connack.reasonCode).toBe(0);
      expect(advertised(connack.properties)).toEqual({
        ...advertised(),
        maximumQoS: 2,
        retainAvailable: true,
        wildcardSubscriptionAvailable: true,
        subscriptionIdentifiersAvailable: true,
        sharedSubscriptionAvailable: true,
        ...expected,
      });
    });
  }
});
