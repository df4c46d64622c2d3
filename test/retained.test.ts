import type { IClientSubscribeOptions, MqttClient } from 'mqtt';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { connect, type Received, startBroker } from './helpers.js';
import { connectAck, Inbox } from './spec-helpers.js';

const VERSIONS = [4, 5] as const;
const MARK = 'mk';

/**
 * A fresh client subscribed to `filter` (and to the marker topic), returning what it received
 * up to the marker that `pub` publishes after the SUBACK: retained messages, then nothing else.
 * The marker is QoS 2 because mqtt.js emits QoS 2 messages only at PUBREL.
 */
async function subscribeAndCollect(
  url: string,
  pub: MqttClient,
  filter: string,
  opts: Partial<IClientSubscribeOptions> & { protocolVersion?: 4 | 5 } = {},
): Promise<Received[]> {
  const { protocolVersion = 5, ...subOpts } = opts;
  const { client, inbox } = await connectAck(url, { protocolVersion });
  await client.subscribeAsync(MARK, { qos: 2 });
  await client.subscribeAsync(filter, { qos: 2, ...subOpts });
  await pub.publishAsync(MARK, 'm', { qos: 2 });
  const got = await inbox.until(MARK);
  return got.slice(0, -1);
}

describe('retained messages: set, replace, clear', () => {
  for (const version of VERSIONS) {
    it(`v${version}: a new subscription receives the retained message with RETAIN=1 [MQTT-3.3.1-8] (3.1.1) [MQTT-3.3.1-9] (5.0)`, async () => {
      const { url, broker } = await startBroker();
      const pub = await connect(url, { protocolVersion: version });
      await pub.publishAsync('r/a', 'one', { qos: 1, retain: true });
      expect(broker.stats.retained).toBe(1);
      const got = await subscribeAndCollect(url, pub, 'r/a', { protocolVersion: version });
      expect(got.map((m) => [m.topic, m.payload, m.packet.retain, m.packet.qos])).toEqual([
        ['r/a', 'one', true, 1],
      ]);
    });

    it(`v${version}: a retained message replaces the previous one on its topic [MQTT-3.3.1-5]`, async () => {
      const { url } = await startBroker();
      const pub = await connect(url, { protocolVersion: version });
      await pub.publishAsync('r/a', 'one', { qos: 1, retain: true });
      await pub.publishAsync('r/a', 'two', { qos: 1, retain: true });
      const got = await subscribeAndCollect(url, pub, 'r/a', { protocolVersion: version });
      expect(Inbox.brief(got)).toEqual(['r/a:two']);
    });

    it(`v${version}: an empty retained payload clears the topic and is forwarded as normal [MQTT-3.3.1-6] [MQTT-3.3.1-7]`, async () => {
      const { url, broker } = await startBroker();
      const pub = await connect(url, { protocolVersion: version });
      const existing = await connectAck(url, { protocolVersion: version });
      await existing.client.subscribeAsync('r/a', { qos: 1 });
      await pub.publishAsync('r/a', 'one', { qos: 1, retain: true });
      await pub.publishAsync('r/a', '', { qos: 1, retain: true });
      const live = await existing.inbox.take(2);
      expect(live.map((m) => [m.payload, m.packet.retain])).toEqual([
        ['one', false],
        ['', false],
      ]);
      expect(broker.stats.retained).toBe(0);
      expect(await subscribeAndCollect(url, pub, 'r/a', { protocolVersion: version })).toEqual([]);
    });

    it(`v${version}: a PUBLISH with RETAIN=0 neither replaces nor clears the retained message [MQTT-3.3.1-8] (5.0) [MQTT-3.3.1-12] (3.1.1)`, async () => {
      const { url } = await startBroker();
      const pub = await connect(url, { protocolVersion: version });
      await pub.publishAsync('r/a', 'kept', { qos: 1, retain: true });
      await pub.publishAsync('r/a', 'live', { qos: 1, retain: false });
      await pub.publishAsync('r/a', '', { qos: 1, retain: false });
      const got = await subscribeAndCollect(url, pub, 'r/a', { protocolVersion: version });
      expect(Inbox.brief(got)).toEqual(['r/a:kept']);
    });

    it(`v${version}: forwarded to an existing subscription with RETAIN=0 [MQTT-3.3.1-9] (3.1.1) [MQTT-3.3.1-12] (5.0)`, async () => {
      const { url } = await startBroker();
      const { client: sub, inbox } = await connectAck(url, { protocolVersion: version });
      await sub.subscribeAsync('r/live', { qos: 1 });
      const pub = await connect(url, { protocolVersion: version });
      await pub.publishAsync('r/live', 'x', { qos: 1, retain: true });
      const [m] = await inbox.take(1);
      expect(m.packet.retain).toBe(false);
    });
  }

  it('v5: Retain As Published keeps the RETAIN flag of the incoming PUBLISH [MQTT-3.3.1-13]', async () => {
    const { url } = await startBroker();
    const { client: sub, inbox } = await connectAck(url, { protocolVersion: 5 });
    await sub.subscribeAsync('rap/t', { qos: 1, rap: true });
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('rap/t', 'retained', { qos: 1, retain: true });
    await pub.publishAsync('rap/t', 'plain', { qos: 1, retain: false });
    const got = await inbox.take(2);
    expect(got.map((m) => [m.payload, m.packet.retain])).toEqual([
      ['retained', true],
      ['plain', false],
    ]);
  });

  it('retained messages are delivered at min(their QoS, granted QoS) [MQTT-3.8.4-8]', async () => {
    const { url } = await startBroker();
    const pub = await connect(url);
    await pub.publishAsync('rq/two', '2', { qos: 2, retain: true });
    await pub.publishAsync('rq/one', '1', { qos: 1, retain: true });
    await pub.publishAsync('rq/zero', '0', { qos: 0, retain: true });
    const got = await subscribeAndCollect(url, pub, 'rq/+', { qos: 1 });
    expect(got.map((m) => [m.topic, m.packet.qos]).sort()).toEqual([
      ['rq/one', 1],
      ['rq/two', 1],
      ['rq/zero', 0],
    ]);
  });
});

describe('Retain Handling (5.0)', () => {
  const cases = [
    { rh: 0, first: 1, again: 1, cite: '[MQTT-3.3.1-9] [MQTT-3.8.4-4]: sent on every SUBSCRIBE' },
    { rh: 1, first: 1, again: 0, cite: '[MQTT-3.3.1-10]: sent only if the subscription did not exist' },
    { rh: 2, first: 0, again: 0, cite: '[MQTT-3.3.1-11]: never sent' },
  ] as const;
  for (const c of cases) {
    it(`Retain Handling ${c.rh} ${c.cite}`, async () => {
      const { url } = await startBroker();
      const pub = await connect(url, { protocolVersion: 5 });
      await pub.publishAsync('rh/t', 'r', { qos: 1, retain: true });
      const { client, inbox } = await connectAck(url, { protocolVersion: 5 });
      await client.subscribeAsync(MARK, { qos: 2 });
      const counts: number[] = [];
      for (let i = 0; i < 2; i++) {
        await client.subscribeAsync('rh/t', { qos: 1, rh: c.rh });
        await pub.publishAsync(MARK, 'm', { qos: 2 });
        const got = await inbox.until(MARK);
        counts.push(got.filter((m) => m.topic === 'rh/t' && m.packet.retain).length);
      }
      expect(counts).toEqual([c.first, c.again]);
    });
  }
});

describe('wildcard subscriptions receive every matching retained message', () => {
  const topics = ['w', 'w/a', 'w/b/c', 'x/a', '$app/w'];
  const cases: [filter: string, expected: string[]][] = [
    ['w/#', ['w', 'w/a', 'w/b/c']],
    ['w/+', ['w/a']],
    ['+/a', ['w/a', 'x/a']],
    ['+/+/c', ['w/b/c']],
    // Leading wildcards do not match `$` topics [MQTT-4.7.2-1].
    ['#', ['w', 'w/a', 'w/b/c', 'x/a']],
    ['+/w', []],
    ['$app/#', ['$app/w']],
  ];
  for (const [filter, expected] of cases) {
    it(`"${filter}" → ${JSON.stringify(expected)}`, async () => {
      const { url } = await startBroker();
      const pub = await connect(url);
      for (const t of topics) await pub.publishAsync(t, `v:${t}`, { qos: 1, retain: true });
      const got = await subscribeAndCollect(url, pub, filter, { qos: 1 });
      expect(got.every((m) => m.packet.retain && m.payload === `v:${m.topic}`)).toBe(true);
      expect(got.map((m) => m.topic).sort()).toEqual([...expected].sort());
    });
  }
});

describe('retained messages and Message Expiry (5.0)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('an expired retained message is not sent; an unexpired one carries the remaining interval [MQTT-3.3.2-5] [MQTT-3.3.2-6]', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const { url, broker } = await startBroker();
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('re/short', 's', {
      qos: 1,
      retain: true,
      properties: { messageExpiryInterval: 2 },
    });
    await pub.publishAsync('re/long', 'l', {
      qos: 1,
      retain: true,
      properties: { messageExpiryInterval: 100 },
    });
    vi.setSystemTime(Date.now() + 10_000);
    const got = await subscribeAndCollect(url, pub, 're/+', { qos: 1 });
    expect(got.map((m) => [m.topic, m.packet.properties?.messageExpiryInterval])).toEqual([['re/long', 90]]);
    expect(broker.stats.retained).toBe(1);
  });
});
