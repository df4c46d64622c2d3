import type { IUnsubackPacket } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { connect, RawClient, startBroker } from './helpers.js';
import { connectAck, Inbox, rawPublishes, rawSubscribe } from './spec-helpers.js';

const VERSIONS = [4, 5] as const;
const MARK = 'marker';

describe('topic wildcards', () => {
  // [filter, topics it matches, topics it does not]; every topic is published, then a marker.
  const cases: [string, string[], string[], string][] = [
    ['a/+/c', ['a/b/c', 'a//c'], ['a/b/c/d', 'a/c', 'b/b/c'], '[MQTT-4.7.1-2] (5.0)'],
    ['a/#', ['a', 'a/b', 'a/b/c'], ['b', 'ab', 'b/a'], '"a/#" matches "a" too (MQTT 5.0 §4.7.1.2)'],
    ['+', ['a', 'b'], ['a/b', '/a'], '(§4.7.1.3)'],
    ['+/+', ['a/b', '/b'], ['a', 'a/b/c'], '(§4.7.1.3)'],
    ['a/+/#', ['a/b', 'a/b/c/d'], ['a', 'b/c'], '(§4.7.1)'],
    ['#', ['a', 'a/b', '/x'], ['$app/x', '$share'], 'leading # does not match $-topics [MQTT-4.7.2-1]'],
    ['+/x', ['a/x', '/x'], ['$app/x', 'a/x/y'], 'leading + does not match $-topics [MQTT-4.7.2-1]'],
    ['$app/#', ['$app', '$app/a/b'], ['SYS/a', 'x/$app/a'], 'an explicit $ level matches (§4.7.2)'],
    ['a/b', ['a/b'], ['a/B', 'a/b/', ' a/b'], 'no normalisation [MQTT-4.7.3-4]'],
  ];
  for (const [filter, hits, misses, cite] of cases) {
    it(`"${filter}" ${cite}`, async () => {
      const { url } = await startBroker();
      const { client: sub, inbox } = await connectAck(url);
      await sub.subscribeAsync([filter, MARK], { qos: 1 });
      const pub = await connect(url);
      // Interleave hits and misses; the order of the hits must be kept [MQTT-4.6.0-6].
      const all = [...misses, ...hits].sort();
      for (const t of all) await pub.publishAsync(t, t, { qos: 1 });
      await pub.publishAsync(MARK, 'm', { qos: 1 });
      const got = await inbox.until(MARK);
      expect(got.map((m) => m.topic)).toEqual([...all.filter((t) => hits.includes(t)), MARK]);
    });
  }
});

describe('invalid topic filters', () => {
  const filters = [
    { topic: 'ok/1', qos: 1, valid: true },
    { topic: 'a/#/b', qos: 0, valid: false }, // # not last [MQTT-4.7.1-1]
    { topic: 'a+', qos: 2, valid: false }, // + not alone in its level [MQTT-4.7.1-2]
    { topic: 'ok/+/2', qos: 2, valid: true },
    { topic: 'a#', qos: 1, valid: false },
    { topic: '$share/g', qos: 1, valid: false }, // no filter after the share name [MQTT-4.8.2-2]
  ] as const;
  for (const version of VERSIONS) {
    const failure = version === 5 ? 0x8f : 0x80;
    it(`v${version}: refused with 0x${failure.toString(16)}, valid filters in the same SUBSCRIBE granted [MQTT-3.8.4-5] [MQTT-3.8.4-7] [MQTT-3.9.3-1]`, async () => {
      const { port, url } = await startBroker();
      const raw = await RawClient.connected(port, version);
      const ack = await rawSubscribe(
        raw,
        filters.map(({ topic, qos }) => ({ topic, qos })),
        77,
      );
      // Same packet id [MQTT-3.8.4-2]; one code per filter, in order.
      expect(ack.messageId).toBe(77);
      expect(ack.granted).toEqual(filters.map((f) => (f.valid ? f.qos : failure)));
      const pub = await connect(url);
      await pub.publishAsync('ok/1', 'a', { qos: 1 });
      await pub.publishAsync('ok/x/2', 'b', { qos: 1 });
      const got = await rawPublishes(raw, 2);
      expect(got.map((p) => [p.topic, p.qos])).toEqual([
        ['ok/1', 1],
        ['ok/x/2', 1],
      ]);
    });
  }
});

describe('overlapping subscriptions', () => {
  for (const version of VERSIONS) {
    it(`v${version}: one copy per client, at the highest granted QoS [MQTT-3.3.4-2]`, async () => {
      const { url } = await startBroker();
      const { client: sub, inbox } = await connectAck(url, { protocolVersion: version });
      await sub.subscribeAsync('o/#', { qos: 0 });
      await sub.subscribeAsync('o/+', { qos: 2 });
      await sub.subscribeAsync('o/x', { qos: 1 });
      await sub.subscribeAsync(MARK, { qos: 2 });
      const pub = await connect(url, { protocolVersion: version });
      await pub.publishAsync('o/x', 'once', { qos: 2 });
      await pub.publishAsync(MARK, 'm', { qos: 2 });
      const got = await inbox.until(MARK);
      expect(got.map((m) => [m.topic, m.packet.qos])).toEqual([
        ['o/x', 2],
        [MARK, 2],
      ]);
    });
  }

  it('v5: the single copy carries every matching Subscription Identifier [MQTT-3.3.4-3] [MQTT-3.3.4-4]', async () => {
    const { url } = await startBroker();
    const { client: sub, inbox } = await connectAck(url, { protocolVersion: 5 });
    await sub.subscribeAsync('s/#', { qos: 1, properties: { subscriptionIdentifier: 1 } });
    await sub.subscribeAsync('s/+', { qos: 1, properties: { subscriptionIdentifier: 300 } });
    await sub.subscribeAsync('s/x', { qos: 1 }); // no identifier
    await sub.subscribeAsync('t/x', { qos: 1, properties: { subscriptionIdentifier: 7 } });
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('s/x', 'both', { qos: 1 });
    await pub.publishAsync('s/y/z', 'one', { qos: 1 });
    await pub.publishAsync('t/x', 'other', { qos: 1 });
    const got = await inbox.take(3);
    const ids = got.map((m) => [
      m.topic,
      [m.packet.properties?.subscriptionIdentifier ?? []].flat().sort((a, b) => a - b),
    ]);
    expect(ids).toEqual([
      ['s/x', [1, 300]],
      ['s/y/z', [1]],
      ['t/x', [7]],
    ]);
  });

  it('v5: a retained message sent because of a SUBSCRIBE carries its Subscription Identifier [MQTT-3.3.4-3]', async () => {
    const { url } = await startBroker();
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('sr/t', 'kept', { qos: 1, retain: true });
    const { client: sub, inbox } = await connectAck(url, { protocolVersion: 5 });
    await sub.subscribeAsync('sr/+', { qos: 1, properties: { subscriptionIdentifier: 42 } });
    const [m] = await inbox.take(1);
    expect([m.payload, m.packet.retain, m.packet.properties?.subscriptionIdentifier]).toEqual([
      'kept',
      true,
      42,
    ]);
  });

  it('v5: subscribing again to the same filter replaces the subscription [MQTT-3.8.4-3]', async () => {
    const { url } = await startBroker();
    const { client: sub, inbox } = await connectAck(url, { protocolVersion: 5 });
    await sub.subscribeAsync('rep/t', { qos: 2, properties: { subscriptionIdentifier: 1 } });
    await sub.subscribeAsync('rep/t', { qos: 1, properties: { subscriptionIdentifier: 2 } });
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('rep/t', 'x', { qos: 2 });
    await pub.publishAsync('rep/t', 'y', { qos: 2 });
    const got = await inbox.take(2);
    expect(got.map((m) => [m.payload, m.packet.qos, m.packet.properties?.subscriptionIdentifier])).toEqual([
      ['x', 1, 2],
      ['y', 1, 2],
    ]);
  });
});

describe('No Local (5.0)', () => {
  it('a No Local subscription does not receive its own messages; others do [MQTT-3.8.3-3]', async () => {
    const { url } = await startBroker();
    const me = await connectAck(url, { protocolVersion: 5 });
    const other = await connectAck(url, { protocolVersion: 5 });
    await me.client.subscribeAsync('nl/t', { qos: 1, nl: true });
    await me.client.subscribeAsync('nl/echo', { qos: 1, nl: false });
    await me.client.subscribeAsync(MARK, { qos: 1 });
    await other.client.subscribeAsync('nl/t', { qos: 1, nl: true });
    await me.client.publishAsync('nl/t', 'mine', { qos: 1 });
    await me.client.publishAsync('nl/echo', 'echo', { qos: 1 });
    await other.client.publishAsync('nl/t', 'theirs', { qos: 1 });
    await other.client.publishAsync(MARK, 'm', { qos: 1 });
    expect(Inbox.brief(await me.inbox.until(MARK))).toEqual(['nl/echo:echo', 'nl/t:theirs', `${MARK}:m`]);
    expect(Inbox.brief(await other.inbox.take(1))).toEqual(['nl/t:mine']);
  });
});

describe('UNSUBSCRIBE', () => {
  for (const version of VERSIONS) {
    it(`v${version}: stops delivery for exactly the filter given [MQTT-3.10.4-1] [MQTT-3.10.4-2]`, async () => {
      const { url } = await startBroker();
      const { client: sub, inbox } = await connectAck(url, { protocolVersion: version });
      await sub.subscribeAsync(['u/t', 'w/#', MARK], { qos: 1 });
      await sub.unsubscribeAsync(['u/t', 'w/+']);
      const pub = await connect(url);
      await pub.publishAsync('u/t', 'gone', { qos: 1 });
      // "w/+" is not "w/#": the wildcard subscription stays.
      await pub.publishAsync('w/x', 'kept', { qos: 1 });
      await pub.publishAsync(MARK, 'm', { qos: 1 });
      expect(Inbox.brief(await inbox.until(MARK))).toEqual(['w/x:kept', `${MARK}:m`]);
    });
  }

  it('v5: UNSUBACK has 0x00 for a removed subscription and 0x11 for none, in order [MQTT-3.11.3-1] (§3.11.3)', async () => {
    const { port } = await startBroker();
    const raw = await RawClient.connected(port, 5);
    await rawSubscribe(raw, [
      { topic: 'a', qos: 0 },
      { topic: 'c/#', qos: 1 },
    ]);
    raw.send({ cmd: 'unsubscribe', messageId: 12, unsubscriptions: ['a', 'b', 'c/#', 'a'] });
    const ack = (await raw.nextOf('unsuback')) as IUnsubackPacket;
    // Same packet id [MQTT-3.10.4-5]; the second "a" no longer exists [MQTT-3.10.4-6].
    expect(ack.messageId).toBe(12);
    expect(ack.granted).toEqual([0x00, 0x11, 0x00, 0x11]);
  });

  it('v4: UNSUBACK is sent even when nothing was subscribed [MQTT-3.10.4-5]', async () => {
    const { port } = await startBroker();
    const raw = await RawClient.connected(port, 4);
    raw.send({ cmd: 'unsubscribe', messageId: 9, unsubscriptions: ['never'] });
    expect(await raw.next()).toMatchObject({ cmd: 'unsuback', messageId: 9 });
  });
});
