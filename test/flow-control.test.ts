import type { IConnackPacket, IPublishPacket, Packet } from 'mqtt-packet';
import { describe, expect, it, vi } from 'vitest';
import type { Message } from '../broker/index.js';
import { connect, RawClient, startBroker } from './helpers.js';
import { connectAck, rawConnect, rawPublishes, rawSubscribe, uid } from './spec-helpers.js';

/**
 * Reads a raw subscriber's packets up to the QoS 0 marker (QoS 0 is not held back by the window,
 * so it shows what was sent before it) and returns the payloads of the QoS 1/2 PUBLISHes.
 */
async function untilMarker(raw: RawClient): Promise<IPublishPacket[]> {
  const out: IPublishPacket[] = [];
  for (;;) {
    const p = await raw.next();
    if (p?.cmd !== 'publish') throw new Error(`expected PUBLISH, got ${p?.cmd ?? 'close'}`);
    if (p.topic === 'fc/marker') return out;
    out.push(p);
  }
}
const payloads = (ps: IPublishPacket[]) => ps.map((p) => p.payload.toString());

describe('outbound inflight window [MQTT-3.3.4-9] [MQTT-4.9.0-2]', () => {
  const cases = [
    { name: 'v4, broker maxInflight 5', version: 4, maxInflight: 5, receiveMaximum: undefined, window: 5 },
    {
      name: 'v5, client Receive Maximum 2 < maxInflight 5',
      version: 5,
      maxInflight: 5,
      receiveMaximum: 2,
      window: 2,
    },
    {
      name: 'v5, client Receive Maximum 10 > maxInflight 3',
      version: 5,
      maxInflight: 3,
      receiveMaximum: 10,
      window: 3,
    },
  ] as const;
  for (const c of cases) {
    it(`${c.name}: a subscriber that never acks gets ${c.window}; each PUBACK releases exactly one more`, async () => {
      const { port, url, broker } = await startBroker({ maxInflight: c.maxInflight });
      const clientId = uid('win');
      const { raw } = await rawConnect(port, c.version, {
        clientId,
        ...(c.receiveMaximum && { properties: { receiveMaximum: c.receiveMaximum } }),
      });
      await rawSubscribe(raw, [
        { topic: 'fc/t', qos: 1 },
        { topic: 'fc/marker', qos: 0 },
      ]);
      const pub = await connect(url);
      const total = c.window + 3;
      for (let i = 0; i < total; i++) await pub.publishAsync('fc/t', `${i}`, { qos: 1 });
      await pub.publishAsync('fc/marker', 'm', { qos: 0 });
      const first = await untilMarker(raw);
      expect(payloads(first)).toEqual([...Array(c.window).keys()].map(String));
      const session = broker.sessions.get(clientId)!;
      expect([session.inflight.size, session.queued]).toEqual([c.window, 3]);

      // PUBACK one: exactly one more is sent, in order.
      raw.send({ cmd: 'puback', messageId: first[0].messageId });
      const [next] = await rawPublishes(raw, 1);
      expect(next.payload.toString()).toBe(`${c.window}`);
      await pub.publishAsync('fc/marker', 'm', { qos: 0 });
      expect(await untilMarker(raw)).toEqual([]);
    });
  }

  it('v5 QoS 2: PUBREC does not free a slot, PUBCOMP does (MQTT 5.0 §4.9)', async () => {
    const { port, url } = await startBroker();
    const { raw } = await rawConnect(port, 5, { properties: { receiveMaximum: 1 } });
    await rawSubscribe(raw, [
      { topic: 'fc/t', qos: 2 },
      { topic: 'fc/marker', qos: 0 },
    ]);
    const pub = await connect(url);
    await pub.publishAsync('fc/t', 'a', { qos: 2 });
    await pub.publishAsync('fc/t', 'b', { qos: 2 });
    const [a] = await rawPublishes(raw, 1);
    raw.send({ cmd: 'pubrec', messageId: a.messageId });
    expect(await raw.next()).toMatchObject({ cmd: 'pubrel', messageId: a.messageId });
    await pub.publishAsync('fc/marker', 'm', { qos: 0 });
    expect(await untilMarker(raw)).toEqual([]);
    raw.send({ cmd: 'pubcomp', messageId: a.messageId });
    const [b] = await rawPublishes(raw, 1);
    expect(b.payload.toString()).toBe('b');
  });

  it('QoS 0 is not held back by a full window (our choice: §4.9 lets QoS 0 continue when the quota is 0)', async () => {
    const { port, url } = await startBroker({ maxInflight: 1 });
    const raw = await RawClient.connected(port, 4);
    await rawSubscribe(raw, [{ topic: 'fc/t', qos: 1 }]);
    const pub = await connect(url);
    await pub.publishAsync('fc/t', 'held', { qos: 1 });
    await pub.publishAsync('fc/t', 'queued', { qos: 1 });
    await pub.publishAsync('fc/t', 'zero', { qos: 0 });
    const got = await rawPublishes(raw, 2);
    expect(got.map((p) => [p.payload.toString(), p.qos])).toEqual([
      ['held', 1],
      ['zero', 0],
    ]);
  });
});

describe('queue bound (maxQueued) under drop-new', () => {
  it('overflow beyond inflight + maxQueued is dropped, counted and reported by the drop event', async () => {
    const { port, url, broker } = await startBroker({
      maxInflight: 1,
      maxQueued: 3,
      queueOverflow: 'drop-new',
    });
    const clientId = uid('q');
    const raw = await RawClient.connected(port, 4, { clientId });
    await rawSubscribe(raw, [{ topic: 'fc/t', qos: 1 }]);
    const drops: [string | null, string, string][] = [];
    broker.on('drop', (id: string | null, msg: Message, reason: string) =>
      drops.push([id, msg.payload.toString(), reason]),
    );
    const pub = await connect(url);
    for (let i = 0; i < 6; i++) await pub.publishAsync('fc/t', `${i}`, { qos: 1 });
    expect(broker.stats.messagesDropped).toBe(2);
    expect(drops).toEqual([
      [clientId, '4', 'queue full'],
      [clientId, '5', 'queue full'],
    ]);
    // What was kept arrives in order as the window frees up.
    const seen: string[] = [];
    for (let i = 0; i < 4; i++) {
      const [p] = await rawPublishes(raw, 1);
      seen.push(p.payload.toString());
      raw.send({ cmd: 'puback', messageId: p.messageId });
    }
    expect(seen).toEqual(['0', '1', '2', '3']);
    await vi.waitFor(() => expect(broker.sessions.get(clientId)?.inflight.size).toBe(0));
  });

  it('an offline persistent session keeps at most maxQueuedBytes in persistence; the rest are dropped', async () => {
    // Each message counts its payload and topic: 1 + 4 bytes, so three fit in 15.
    const { url, broker } = await startBroker({
      maxQueued: 1,
      maxQueuedBytes: 15,
      queueOverflow: 'drop-new',
    });
    const clientId = uid('offq');
    const a = await connectAck(url, { clientId, clean: false });
    await a.client.subscribeAsync('fc/t', { qos: 1 });
    await a.client.endAsync();
    await vi.waitFor(() => expect(broker.sessions.get(clientId)?.conn).toBeNull());
    const pub = await connect(url);
    for (let i = 0; i < 5; i++) await pub.publishAsync('fc/t', `${i}`, { qos: 1 });
    expect(broker.stats.messagesDropped).toBe(2);
    const b = await connectAck(url, { clientId, clean: false });
    await b.client.subscribeAsync('fc/marker', { qos: 1 });
    await pub.publishAsync('fc/marker', 'm', { qos: 1 });
    expect((await b.inbox.until('fc/marker')).map((m) => m.payload)).toEqual(['0', '1', '2', 'm']);
  });
});

describe('inbound Receive Maximum (ours)', () => {
  const publish2 = (messageId: number): Packet => ({
    cmd: 'publish',
    topic: 'fc/in',
    payload: Buffer.from(`${messageId}`),
    qos: 2,
    messageId,
    retain: false,
    dup: false,
  });

  it('CONNACK advertises it; a third unreleased QoS 2 PUBLISH → DISCONNECT 0x93 (MQTT 5.0 §3.2.2.3.3) [MQTT-3.3.4-7]', async () => {
    const { port } = await startBroker({ receiveMaximum: 2 });
    const { raw, connack } = await rawConnect(port, 5);
    expect((connack as IConnackPacket).properties?.receiveMaximum).toBe(2);
    for (const id of [1, 2]) {
      raw.send(publish2(id));
      expect(await raw.next()).toMatchObject({ cmd: 'pubrec', messageId: id });
    }
    raw.send(publish2(3));
    expect(await raw.next()).toMatchObject({ cmd: 'disconnect', reasonCode: 0x93 });
    expect(await raw.next()).toBeNull();
  });

  it('PUBCOMP returns quota: QoS 2 exchanges completed one after another never exceed it', async () => {
    const { port } = await startBroker({ receiveMaximum: 2 });
    const { raw } = await rawConnect(port, 5);
    for (let id = 1; id <= 6; id++) {
      raw.send(publish2(id));
      expect(await raw.next()).toMatchObject({ cmd: 'pubrec', messageId: id });
      raw.send({ cmd: 'pubrel', messageId: id });
      expect(await raw.next()).toMatchObject({ cmd: 'pubcomp', messageId: id });
    }
    // QoS 0 does not count against the quota.
    for (let i = 0; i < 5; i++) {
      raw.send({
        cmd: 'publish',
        topic: 'fc/in',
        payload: Buffer.from('z'),
        qos: 0,
        retain: false,
        dup: false,
      });
    }
    raw.send({ cmd: 'pingreq' });
    expect(await raw.next()).toMatchObject({ cmd: 'pingresp' });
  });
});
