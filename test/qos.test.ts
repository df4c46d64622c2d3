import type { IPublishPacket, Packet } from 'mqtt-packet';
import { describe, expect, it, vi } from 'vitest';
import { connect, connectPacket, nextMessages, RawClient, startBroker } from './helpers.js';
import { connectAck, Inbox, rawPublishes, rawSubscribe, uid } from './spec-helpers.js';

const VERSIONS = [4, 5] as const;
const QOS = [0, 1, 2] as const;

describe('QoS flows over TCP', () => {
  for (const protocolVersion of VERSIONS) {
    for (const qos of QOS) {
      it(`v${protocolVersion}: QoS ${qos} publish reaches a QoS 2 subscriber at QoS ${qos} [MQTT-3.3.1-1]`, async () => {
        const { url } = await startBroker();
        const sub = await connect(url, { protocolVersion });
        const pub = await connect(url, { protocolVersion });
        await sub.subscribeAsync('t/q', { qos: 2 });
        const got = nextMessages(sub, 1);
        await pub.publishAsync('t/q', `hello ${qos}`, { qos });
        const [m] = await got;
        expect(m.topic).toBe('t/q');
        expect(m.payload).toBe(`hello ${qos}`);
        expect(m.packet.qos).toBe(qos);
      });
    }
  }
});

describe('consecutive messages of one topic and payload length', () => {
  for (const protocolVersion of VERSIONS) {
    it(`v${protocolVersion}: each keeps its own payload, QoS and packet id [MQTT-3.3.1-1] [MQTT-2.2.1-3]`, async () => {
      // Messages like these share one encoded header (broker/encode.ts); nothing else may carry over.
      const { port, url } = await startBroker();
      const sub = await RawClient.connected(port, protocolVersion, { clientId: uid('shape-sub') });
      sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'shape/+', qos: 2 }] });
      expect(await sub.next()).toMatchObject({ cmd: 'suback' });
      const pub = await connect(url, { protocolVersion });
      const sent: { topic: string; payload: string; qos: 0 | 1 | 2 }[] = [];
      for (let i = 0; i < 12; i++) {
        const qos = (i % 3) as 0 | 1 | 2;
        const m = {
          topic: i < 9 ? 'shape/a' : 'shape/b',
          payload: `payload-${String(i).padStart(3, '0')}`,
          qos,
        };
        sent.push(m);
        await pub.publishAsync(m.topic, m.payload, { qos });
      }
      const got: IPublishPacket[] = [];
      const ids = new Set<number>();
      while (got.length < sent.length) {
        const p = await sub.next();
        if (p === null) throw new Error('subscriber closed');
        if (p.cmd !== 'publish') continue;
        got.push(p);
        if (p.qos === 1) sub.send({ cmd: 'puback', messageId: p.messageId });
        if (p.qos === 2) sub.send({ cmd: 'pubrec', messageId: p.messageId });
        if (p.qos > 0) ids.add(p.messageId!);
      }
      expect(got.map((p) => ({ topic: p.topic, payload: String(p.payload), qos: p.qos }))).toEqual(sent);
      // Packet ids are allocated in sequence here: a reused header whose id was not rewritten would
      // repeat one.
      expect(ids.size).toBe(sent.filter((m) => m.qos > 0).length);
    });
  }
});

describe('more topics than the encoded-header map keeps', () => {
  it('every message keeps its own topic, payload and packet id across the map starting over [MQTT-3.3.2-1] [MQTT-2.2.1-3]', async () => {
    // 2,500 topics of ~1 KiB fill the map's 2 MiB byte bound more than once, so headers are kept
    // in slabs, dropped, and made again (broker/encode.ts); then 4 topics of 9 KiB take their own.
    const { port, url } = await startBroker();
    const sub = await RawClient.connected(port, 4, { clientId: uid('shapes-sub') });
    sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'shapes/#', qos: 1 }] });
    expect(await sub.next()).toMatchObject({ cmd: 'suback' });
    const pub = await connect(url);
    const sent: { topic: string; payload: string }[] = [];
    // Topics in pairs, each twice (a b a b): the second of each is encoded from its kept header,
    // after the other topic's header was kept too.
    const pairs = (name: (i: number) => string, n: number) => {
      for (let i = 0; i < n; i += 2) {
        const [t, u] = [name(i), name(i + 1)];
        sent.push({ topic: t, payload: `a-${i}` }, { topic: u, payload: `a-${i + 1}` });
        sent.push({ topic: t, payload: `b-${i}` }, { topic: u, payload: `b-${i + 1}` });
      }
    };
    pairs((i) => `shapes/${String(i).padStart(5, '0')}/${'x'.repeat(1000)}`, 2500);
    pairs((i) => `shapes/big${i}/${'y'.repeat(9000)}`, 4);
    const got: { topic: string; payload: string }[] = [];
    let lastId = 0;
    let idsInOrder = true;
    // Read while publishing: the broker holds the subscriber's queue within its bounds (backpressure).
    const reading = (async () => {
      while (got.length < sent.length) {
        const p = await sub.next();
        if (p === null) throw new Error('subscriber closed');
        if (p.cmd !== 'publish') continue;
        got.push({ topic: p.topic, payload: String(p.payload) });
        if (p.messageId !== (lastId % 65535) + 1) idsInOrder = false;
        lastId = p.messageId!;
        sub.send({ cmd: 'puback', messageId: p.messageId });
      }
    })();
    for (let i = 0; i < sent.length; i += 100)
      await Promise.all(sent.slice(i, i + 100).map((m) => pub.publishAsync(m.topic, m.payload, { qos: 1 })));
    await reading;
    expect(got).toEqual(sent);
    expect(idsInOrder).toBe(true);
  });
});

describe('publisher → broker: acknowledgements', () => {
  for (const version of VERSIONS) {
    it(`v${version}: QoS 1 PUBLISH is answered by PUBACK with its packet id [MQTT-4.3.2-4] [MQTT-2.2.1-5]`, async () => {
      const { port } = await startBroker();
      const raw = await RawClient.connected(port, version);
      raw.send({
        cmd: 'publish',
        topic: 'p/1',
        payload: Buffer.from('x'),
        qos: 1,
        messageId: 4711,
        retain: false,
        dup: false,
      });
      const ack = await raw.next();
      expect(ack).toMatchObject({ cmd: 'puback', messageId: 4711 });
    });

    it(`v${version}: QoS 2 PUBLISH → PUBREC, PUBREL → PUBCOMP, same packet id [MQTT-4.3.3-8] [MQTT-4.3.3-11]`, async () => {
      const { port, broker } = await startBroker();
      const raw = await RawClient.connected(port, version, { clientId: 'q2in' });
      raw.send({
        cmd: 'publish',
        topic: 'p/2',
        payload: Buffer.from('x'),
        qos: 2,
        messageId: 9,
        retain: false,
        dup: false,
      });
      expect(await raw.next()).toMatchObject({ cmd: 'pubrec', messageId: 9 });
      expect(broker.sessions.get('q2in')?.incoming.has(9)).toBe(true);
      raw.send({ cmd: 'pubrel', messageId: 9 });
      expect(await raw.next()).toMatchObject({ cmd: 'pubcomp', messageId: 9 });
      expect(broker.sessions.get('q2in')?.incoming.has(9)).toBe(false);
    });

    it(`v${version}: QoS 0 PUBLISH gets no acknowledgement [MQTT-3.3.4-1]`, async () => {
      const { port } = await startBroker();
      const raw = await RawClient.connected(port, version);
      raw.send({
        cmd: 'publish',
        topic: 'p/0',
        payload: Buffer.from('x'),
        qos: 0,
        retain: false,
        dup: false,
      });
      raw.send({ cmd: 'pingreq' });
      // The first thing back is the PINGRESP: nothing answered the QoS 0 PUBLISH.
      expect((await raw.next())?.cmd).toBe('pingresp');
    });
  }
});

describe('broker → subscriber: delivery protocol', () => {
  for (const version of VERSIONS) {
    it(`v${version}: QoS 0 is sent with DUP 0 and no packet id [MQTT-4.3.1-1] [MQTT-2.2.1-2]`, async () => {
      const { port, url } = await startBroker();
      const raw = await RawClient.connected(port, version);
      await rawSubscribe(raw, [{ topic: 'd/0', qos: 2 }]);
      const pub = await connect(url);
      await pub.publishAsync('d/0', 'zero', { qos: 0 });
      const [p] = await rawPublishes(raw, 1);
      expect(p).toMatchObject({ qos: 0, dup: false, topic: 'd/0' });
      expect(p.messageId).toBeUndefined();
    });

    it(`v${version}: QoS 1 is sent with DUP 0 and a non-zero id, held until PUBACK [MQTT-4.3.2-2] [MQTT-4.3.2-3]`, async () => {
      const { port, url, broker } = await startBroker();
      const raw = await RawClient.connected(port, version, { clientId: 'd1' });
      await rawSubscribe(raw, [{ topic: 'd/1', qos: 2 }]);
      const pub = await connect(url);
      await pub.publishAsync('d/1', 'one', { qos: 1 });
      const [p] = await rawPublishes(raw, 1);
      expect(p).toMatchObject({ qos: 1, dup: false });
      expect(p.messageId).toBeGreaterThan(0);
      const session = broker.sessions.get('d1')!;
      expect(session.inflight.has(p.messageId!)).toBe(true);
      raw.send({ cmd: 'puback', messageId: p.messageId });
      await vi.waitFor(() => expect(session.inflight.size).toBe(0));
    });

    it(`v${version}: QoS 2 is sent with DUP 0; PUBREC → PUBREL with the same id; PUBCOMP completes [MQTT-4.3.3-2] [MQTT-4.3.3-4] [MQTT-4.3.3-5]`, async () => {
      const { port, url, broker } = await startBroker();
      const raw = await RawClient.connected(port, version, { clientId: 'd2' });
      await rawSubscribe(raw, [{ topic: 'd/2', qos: 2 }]);
      const pub = await connect(url);
      await pub.publishAsync('d/2', 'two', { qos: 2 });
      const [p] = await rawPublishes(raw, 1);
      expect(p).toMatchObject({ qos: 2, dup: false });
      const id = p.messageId!;
      raw.send({ cmd: 'pubrec', messageId: id });
      expect(await raw.next()).toMatchObject({ cmd: 'pubrel', messageId: id });
      const session = broker.sessions.get('d2')!;
      expect(session.inflight.get(id)?.state).toBe('pubrel');
      raw.send({ cmd: 'pubcomp', messageId: id });
      await vi.waitFor(() => expect(session.inflight.size).toBe(0));
    });
  }

  it('v5: PUBREC with a reason code ≥ 0x80 ends the exchange: no PUBREL, the slot is free [MQTT-4.3.3-4] [MQTT-4.4.0-2]', async () => {
    const { port, url, broker } = await startBroker();
    const raw = await RawClient.connected(port, 5, { clientId: 'rec80' });
    await rawSubscribe(raw, [{ topic: 'e/#', qos: 2 }]);
    const pub = await connect(url);
    await pub.publishAsync('e/t', 'refused', { qos: 2 });
    const [p] = await rawPublishes(raw, 1);
    raw.send({ cmd: 'pubrec', messageId: p.messageId, reasonCode: 0x80 });
    await vi.waitFor(() => expect(broker.sessions.get('rec80')?.inflight.size).toBe(0));
    await pub.publishAsync('e/marker', 'm', { qos: 0 });
    // The next packet is the marker: no PUBREL was sent for the refused message.
    expect(await raw.next()).toMatchObject({ cmd: 'publish', topic: 'e/marker' });
  });

  it('concurrent QoS 1/2 deliveries use distinct packet ids [MQTT-2.2.1-4]', async () => {
    const { port, url } = await startBroker();
    const raw = await RawClient.connected(port, 4);
    await rawSubscribe(raw, [{ topic: 'ids', qos: 2 }]);
    const pub = await connect(url);
    for (let i = 0; i < 6; i++) pub.publish('ids', `${i}`, { qos: (1 + (i % 2)) as 1 | 2 });
    const ps = await rawPublishes(raw, 6);
    expect(new Set(ps.map((p) => p.messageId)).size).toBe(6);
    // Ordered topic: the same order as published [MQTT-4.6.0-6].
    expect(ps.map((p) => p.payload.toString())).toEqual(['0', '1', '2', '3', '4', '5']);
  });
});

describe('QoS downgrade: delivered at min(published, granted) [MQTT-3.8.4-8]', () => {
  for (const version of VERSIONS) {
    for (const granted of QOS) {
      it(`v${version}: subscription granted QoS ${granted}`, async () => {
        const { url } = await startBroker();
        const { client: sub, inbox } = await connectAck(url, { protocolVersion: version });
        const [grant] = await sub.subscribeAsync('dg/t', { qos: granted });
        // The SUBACK shows the QoS granted [MQTT-3.8.4-7].
        expect(grant.qos).toBe(granted);
        const pub = await connect(url, { protocolVersion: version });
        for (const q of QOS) await pub.publishAsync('dg/t', `pub${q}`, { qos: q });
        const got = await inbox.take(3);
        expect(got.map((m) => [m.payload, m.packet.qos])).toEqual(
          QOS.map((q) => [`pub${q}`, Math.min(q, granted)]),
        );
      });
    }
  }
});

describe('duplicates from the publisher', () => {
  for (const version of VERSIONS) {
    it(`v${version}: a QoS 2 PUBLISH re-sent (DUP) before PUBREL is acknowledged again and delivered once [MQTT-4.3.3-10]`, async () => {
      const { port, url } = await startBroker();
      const { client: sub, inbox } = await connectAck(url, { protocolVersion: version });
      await sub.subscribeAsync(['dup/#'], { qos: 2 });
      const raw = await RawClient.connected(port, version);
      const publish = (dup: boolean, payload: string): Packet => ({
        cmd: 'publish',
        topic: 'dup/t',
        payload: Buffer.from(payload),
        qos: 2,
        messageId: 5,
        retain: false,
        dup,
      });
      raw.send(publish(false, 'once'));
      expect(await raw.next()).toMatchObject({ cmd: 'pubrec', messageId: 5 });
      raw.send(publish(true, 'once'));
      raw.send(publish(true, 'once'));
      expect(await raw.next()).toMatchObject({ cmd: 'pubrec', messageId: 5 });
      expect(await raw.next()).toMatchObject({ cmd: 'pubrec', messageId: 5 });
      raw.send({ cmd: 'pubrel', messageId: 5 });
      expect(await raw.next()).toMatchObject({ cmd: 'pubcomp', messageId: 5 });
      // After PUBCOMP the same id is a new message [MQTT-4.3.3-12].
      raw.send(publish(false, 'again'));
      expect(await raw.next()).toMatchObject({ cmd: 'pubrec', messageId: 5 });
      raw.send({ cmd: 'pubrel', messageId: 5 });
      expect(await raw.next()).toMatchObject({ cmd: 'pubcomp', messageId: 5 });
      raw.send({
        cmd: 'publish',
        topic: 'dup/marker',
        payload: Buffer.from('m'),
        qos: 0,
        retain: false,
        dup: false,
      });
      expect(Inbox.brief(await inbox.until('dup/marker'))).toEqual([
        'dup/t:once',
        'dup/t:again',
        'dup/marker:m',
      ]);
    });

    it(`v${version}: after PUBACK a QoS 1 PUBLISH with the same id is a new message, DUP or not [MQTT-4.3.2-5]`, async () => {
      const { port, url } = await startBroker();
      const { client: sub, inbox } = await connectAck(url, { protocolVersion: version });
      await sub.subscribeAsync(['dup1/#'], { qos: 1 });
      const raw = await RawClient.connected(port, version);
      for (const dup of [false, true]) {
        raw.send({
          cmd: 'publish',
          topic: 'dup1/t',
          payload: Buffer.from(`${dup}`),
          qos: 1,
          messageId: 3,
          retain: false,
          dup,
        });
        expect(await raw.next()).toMatchObject({ cmd: 'puback', messageId: 3 });
      }
      raw.send({
        cmd: 'publish',
        topic: 'dup1/marker',
        payload: Buffer.from('m'),
        qos: 0,
        retain: false,
        dup: false,
      });
      expect(Inbox.brief(await inbox.until('dup1/marker'))).toEqual([
        'dup1/t:false',
        'dup1/t:true',
        'dup1/marker:m',
      ]);
    });
  }

  it('v4: a QoS 2 PUBLISH re-sent after reconnecting to its session, before PUBREL, is not delivered again [MQTT-4.3.3-10] [MQTT-4.4.0-1]', async () => {
    const { port, url, broker } = await startBroker();
    const { client: sub, inbox } = await connectAck(url);
    await sub.subscribeAsync('xdup/#', { qos: 2 });
    const clientId = uid('xdup');
    const publish = (dup: boolean): Packet => ({
      cmd: 'publish',
      topic: 'xdup/t',
      payload: Buffer.from('once'),
      qos: 2,
      messageId: 21,
      retain: false,
      dup,
    });
    const a = await RawClient.connected(port, 4, { clientId, clean: false });
    a.send(publish(false));
    expect(await a.next()).toMatchObject({ cmd: 'pubrec', messageId: 21 });
    a.socket.destroy();
    await vi.waitFor(() => expect(broker.sessions.get(clientId)?.conn).toBeNull());
    const b = await RawClient.connected(port, 4, { clientId, clean: false });
    b.send(publish(true));
    expect(await b.next()).toMatchObject({ cmd: 'pubrec', messageId: 21 });
    b.send({ cmd: 'pubrel', messageId: 21 });
    expect(await b.next()).toMatchObject({ cmd: 'pubcomp', messageId: 21 });
    b.send({
      cmd: 'publish',
      topic: 'xdup/marker',
      payload: Buffer.from('m'),
      qos: 0,
      retain: false,
      dup: false,
    });
    expect(Inbox.brief(await inbox.until('xdup/marker'))).toEqual(['xdup/t:once', 'xdup/marker:m']);
  });

  it('v5: a PUBREL re-sent after reconnecting to its session, whose PUBCOMP was lost, is completed with 0x00; unknown on a new session it is 0x92 [MQTT-4.4.0-1] [MQTT-4.3.3-11]', async () => {
    const { port } = await startBroker();
    const clientId = uid('relagain');
    const session = { clientId, clean: false, properties: { sessionExpiryInterval: 300 } };
    const a = await RawClient.connected(port, 5, session);
    a.send({
      cmd: 'publish',
      topic: 'relagain/t',
      payload: Buffer.from('x'),
      qos: 2,
      messageId: 31,
      retain: false,
      dup: false,
    });
    expect(await a.next()).toMatchObject({ cmd: 'pubrec', messageId: 31 });
    a.send({ cmd: 'pubrel', messageId: 31 });
    // The broker completes it; the client never reads this PUBCOMP (lost with the connection).
    expect(await a.next()).toMatchObject({ cmd: 'pubcomp', messageId: 31, reasonCode: 0 });
    a.socket.destroy();
    await a.closed;

    const b = await RawClient.open(port, 5);
    b.send(connectPacket(5, session));
    expect(await b.next()).toMatchObject({ cmd: 'connack', sessionPresent: true });
    // The client re-sends the PUBREL it still owes [MQTT-4.4.0-1]: done, not "not found".
    b.send({ cmd: 'pubrel', messageId: 31 });
    expect(await b.next()).toMatchObject({ cmd: 'pubcomp', messageId: 31, reasonCode: 0 });

    // A connection that did not resume a session has nothing to re-send: an unknown id is 0x92.
    const fresh = await RawClient.open(port, 5);
    fresh.send(connectPacket(5, { clientId: uid('relnew'), clean: false }));
    expect(await fresh.next()).toMatchObject({ cmd: 'connack', sessionPresent: false });
    fresh.send({ cmd: 'pubrel', messageId: 31 });
    expect(await fresh.next()).toMatchObject({ cmd: 'pubcomp', messageId: 31, reasonCode: 0x92 });
  });

  it('the DUP flag of a forwarded message is not copied from the incoming PUBLISH [MQTT-3.3.1-3]', async () => {
    const { port } = await startBroker();
    const sub = await RawClient.connected(port, 4, { clientId: uid('sub') });
    await rawSubscribe(sub, [{ topic: 'fwd', qos: 1 }]);
    const pub = await RawClient.connected(port, 4);
    pub.send({
      cmd: 'publish',
      topic: 'fwd',
      payload: Buffer.from('d'),
      qos: 1,
      messageId: 8,
      retain: false,
      dup: true,
    });
    const [p] = await rawPublishes(sub, 1);
    expect((p as IPublishPacket).dup).toBe(false);
  });
});
