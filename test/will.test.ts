import type { IClientOptions } from 'mqtt';
import type { IConnectPacket, Packet } from 'mqtt-packet';
import { describe, expect, it, vi } from 'vitest';
import { type Broker, MemoryPersistence } from '../broker/index.js';
import { connect, once, RawClient, startBroker } from './helpers.js';
import { closed, connectAck, disconnectFrom, Inbox, uid } from './spec-helpers.js';

const VERSIONS = [4, 5] as const;

/** A broker with a subscriber on will/# and the marker topic. */
async function setup() {
  const tb = await startBroker();
  const watcher = await connectAck(tb.url, { protocolVersion: 5 });
  await watcher.client.subscribeAsync(['will/#', 'mk'], { qos: 2 });
  const pub = await connect(tb.url);
  /** Everything the watcher received up to a marker published now (QoS 2, like the wills that matter). */
  const untilMarker = async () => {
    await pub.publishAsync('mk', 'm', { qos: 2 });
    return Inbox.brief(await watcher.inbox.until('mk'));
  };
  return { ...tb, watcher, inbox: watcher.inbox, untilMarker };
}

function willOpts(version: 4 | 5, topic: string, extra: Partial<IClientOptions> = {}): IClientOptions {
  return {
    protocolVersion: version,
    clientId: uid('w'),
    will: { topic, payload: Buffer.from('gone'), qos: 1, retain: false },
    ...extra,
  };
}

const rawWill = (topic: string): IConnectPacket['will'] => ({
  topic,
  payload: Buffer.from('gone'),
  qos: 0,
  retain: false,
});

describe('will published when the connection ends abnormally [MQTT-3.1.2-8]', () => {
  for (const version of VERSIONS) {
    it(`v${version}: keep-alive 1 s and silence → closed after 1.5 s [MQTT-3.1.2-22], will published`, async () => {
      const { port, inbox } = await setup();
      const raw = await RawClient.connected(port, version, { keepalive: 1, will: rawWill('will/ka') });
      const t0 = Date.now();
      if (version === 5) expect(await raw.next()).toMatchObject({ cmd: 'disconnect', reasonCode: 0x8d });
      expect(await raw.next()).toBeNull();
      const elapsed = Date.now() - t0;
      expect(elapsed).toBeGreaterThanOrEqual(1000);
      expect(elapsed).toBeLessThan(2000);
      expect(Inbox.brief(await inbox.take(1))).toEqual(['will/ka:gone']);
    });

    it(`v${version}: the socket is destroyed`, async () => {
      const { url, inbox } = await setup();
      const { client } = await connectAck(url, willOpts(version, 'will/destroy'));
      client.stream.destroy();
      expect(Inbox.brief(await inbox.take(1))).toEqual(['will/destroy:gone']);
    });

    it(`v${version}: the connection is taken over [MQTT-3.1.4-3]`, async () => {
      const { url, inbox } = await setup();
      const opts = willOpts(version, 'will/takeover');
      const a = await connectAck(url, opts);
      const aClosed = closed(a.client);
      await connectAck(url, { protocolVersion: version, clientId: opts.clientId });
      await aClosed;
      expect(Inbox.brief(await inbox.take(1))).toEqual(['will/takeover:gone']);
    });
  }

  // Protocol errors close the connection, and "the Server closes the Network Connection because of
  // a protocol error" publishes the will (MQTT 5.0 §3.1.2.5).
  const violations: [string, (raw: RawClient) => void][] = [
    [
      'a second CONNECT [MQTT-3.1.0-2]',
      (raw) =>
        raw.send({
          cmd: 'connect',
          clientId: 'again',
          protocolVersion: 4,
          protocolId: 'MQTT',
          clean: true,
          keepalive: 0,
        } as Packet),
    ],
    [
      'a PUBLISH topic with a wildcard [MQTT-3.3.2-2]',
      (raw) =>
        raw.send({
          cmd: 'publish',
          topic: 'a/+',
          payload: Buffer.from('x'),
          qos: 0,
          retain: false,
          dup: false,
        }),
    ],
    [
      'a SUBSCRIBE with reserved flag bits wrong [MQTT-3.8.1-1]',
      (raw) => raw.write([0x80, 0x06, 0, 1, 0, 1, 0x61, 0]),
    ],
    ['a reserved packet type 0', (raw) => raw.write([0x00, 0x00])],
    ['a server-only packet (CONNACK) from the client', (raw) => raw.write([0x20, 0x02, 0, 0])],
  ];
  for (const [name, violate] of violations) {
    it(`v4: ${name}`, async () => {
      const { port, inbox } = await setup();
      const raw = await RawClient.connected(port, 4, { will: rawWill('will/violation') });
      violate(raw);
      await raw.closed;
      expect(Inbox.brief(await inbox.take(1))).toEqual(['will/violation:gone']);
    });
  }
});

describe('will not published', () => {
  for (const version of VERSIONS) {
    it(`v${version}: after a normal DISCONNECT [MQTT-3.1.2-10] [MQTT-3.14.4-3]`, async () => {
      const { url, broker, untilMarker } = await setup();
      const { client } = await connectAck(url, willOpts(version, 'will/normal'));
      await client.endAsync();
      await vi.waitFor(() => expect(broker.connections.size).toBe(2));
      expect(await untilMarker()).toEqual(['mk:m']);
      expect(broker.wills.size).toBe(0);
    });
  }

  it('v5: DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes it (MQTT 5.0 §3.14.2.1)', async () => {
    const { url, inbox } = await setup();
    const { client } = await connectAck(url, willOpts(5, 'will/0x04'));
    await client.endAsync(false, { reasonCode: 0x04 });
    expect(Inbox.brief(await inbox.take(1))).toEqual(['will/0x04:gone']);
  });
});

describe('Will Delay Interval (5.0)', () => {
  const delayed = (topic: string, delay: number, expiry: number, clientId = uid('wd')): IClientOptions => ({
    protocolVersion: 5,
    clientId,
    clean: false,
    properties: { sessionExpiryInterval: expiry },
    will: {
      topic,
      payload: Buffer.from('late'),
      qos: 1,
      retain: false,
      properties: { willDelayInterval: delay },
    },
  });

  it('delays the will by its interval [MQTT-3.1.2-8]', async () => {
    const { url, inbox, untilMarker } = await setup();
    const { client } = await connectAck(url, delayed('will/delay', 1, 60));
    const gone = once(client.stream, 'close');
    client.stream.destroy();
    await gone;
    const t0 = Date.now();
    // Not published at once.
    expect(await untilMarker()).toEqual(['mk:m']);
    expect(Inbox.brief(await inbox.take(1))).toEqual(['will/delay:late']);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(950);
  });

  it('a reconnect within the delay cancels it [MQTT-3.1.3-9]', async () => {
    const { url, broker, untilMarker } = await setup();
    const opts = delayed('will/cancel', 30, 60);
    const { client } = await connectAck(url, opts);
    client.stream.destroy();
    await vi.waitFor(() => expect(broker.wills.size).toBe(1));
    const again = await connectAck(url, { ...opts, will: undefined });
    expect(again.connack.sessionPresent).toBe(true);
    expect(broker.wills.size).toBe(0);
    expect(await untilMarker()).toEqual(['mk:m']);
  });

  it('the session ending first publishes it: Session Expiry 1 s < Will Delay 30 s [MQTT-3.1.2-8]', async () => {
    const { url, inbox } = await setup();
    const { client } = await connectAck(url, delayed('will/expiry', 30, 1));
    client.stream.destroy();
    const t0 = Date.now();
    expect(Inbox.brief(await inbox.take(1))).toEqual(['will/expiry:late']);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('Session Expiry 0: the session ends with the connection, so the will goes at once despite a 30 s delay [MQTT-3.1.2-8]', async () => {
    const { url, inbox } = await setup();
    const { client } = await connectAck(url, delayed('will/noexp', 30, 0));
    client.stream.destroy();
    expect(Inbox.brief(await inbox.take(1))).toEqual(['will/noexp:late']);
  });

  it('a takeover with Clean Start 0 keeps the session, so a delayed will is not published (MQTT 5.0 §3.1.3.2.2)', async () => {
    const { url, broker, untilMarker } = await setup();
    const opts = delayed('will/keep', 30, 60);
    const a = await connectAck(url, opts);
    const aGone = disconnectFrom(a.client);
    await connectAck(url, { ...opts, will: undefined });
    expect((await aGone).reasonCode).toBe(0x8e);
    expect(await untilMarker()).toEqual(['mk:m']);
    expect(broker.wills.size).toBe(0);
  });

  for (const when of ['on takeover', 'after an abnormal close'] as const) {
    it(`Clean Start 1 ${when} ends the session, so a delayed will is published at once [MQTT-3.1.2-8] (§3.1.3.2.2)`, async () => {
      const { url, broker, inbox } = await setup();
      const opts = delayed('will/ended', 30, 60);
      const { client } = await connectAck(url, opts);
      if (when === 'after an abnormal close') {
        client.stream.destroy();
        await vi.waitFor(() => expect(broker.wills.size).toBe(1));
      }
      await connectAck(url, { ...opts, clean: true, will: undefined });
      expect(Inbox.brief(await inbox.take(1))).toEqual(['will/ended:late']);
    });
  }
});

describe('will QoS, retain and properties', () => {
  const cases = [
    { qos: 1, retain: true, cite: '[MQTT-3.1.2-12] [MQTT-3.1.2-15]: QoS 1, retained' },
    { qos: 2, retain: false, cite: '[MQTT-3.1.2-12] [MQTT-3.1.2-14]: QoS 2, not retained' },
    { qos: 0, retain: true, cite: '[MQTT-3.1.2-15]: QoS 0, retained' },
  ] as const;
  for (const version of VERSIONS) {
    for (const c of cases) {
      it(`v${version}: ${c.cite}`, async () => {
        const { url, broker, inbox } = await setup();
        const { client } = await connectAck(url, {
          ...willOpts(version, 'will/qr'),
          will: { topic: 'will/qr', payload: Buffer.from('gone'), qos: c.qos, retain: c.retain },
        });
        client.stream.destroy();
        const [live] = await inbox.take(1);
        // A live subscriber gets it at the will QoS, with RETAIN 0 [MQTT-3.3.1-12].
        expect([live.packet.qos, live.packet.retain]).toEqual([c.qos, false]);
        expect(broker.stats.retained).toBe(c.retain ? 1 : 0);
        const later = await connectAck(url, { protocolVersion: version });
        await later.client.subscribeAsync(['will/qr', 'mk'], { qos: 2 });
        const pub = await connect(url);
        await pub.publishAsync('mk', 'm', { qos: 2 });
        const got = await later.inbox.until('mk');
        expect(got.map((m) => `${m.topic}:${m.packet.retain}`)).toEqual(
          c.retain ? ['will/qr:true', 'mk:false'] : ['mk:false'],
        );
      });
    }
  }

  it('v5: will properties are passed through, User Properties in order [MQTT-3.1.3-10] [MQTT-3.3.2-4] [MQTT-3.3.2-17]', async () => {
    const { url, inbox } = await setup();
    const { client } = await connectAck(url, {
      ...willOpts(5, 'will/props'),
      will: {
        topic: 'will/props',
        payload: Buffer.from('{"bye":1}'),
        qos: 1,
        retain: false,
        properties: {
          contentType: 'application/json',
          payloadFormatIndicator: true,
          responseTopic: 'reply/here',
          correlationData: Buffer.from([1, 2, 3]),
          userProperties: { z: 'last-name-first', a: ['1', '2'] },
        },
      },
    });
    client.stream.destroy();
    const [m] = await inbox.take(1);
    const p = m.packet.properties!;
    expect(p.contentType).toBe('application/json');
    expect(p.payloadFormatIndicator).toBe(true);
    expect(p.responseTopic).toBe('reply/here');
    expect(Buffer.from(p.correlationData!)).toEqual(Buffer.from([1, 2, 3]));
    expect(p.userProperties).toEqual({ z: 'last-name-first', a: ['1', '2'] });
    expect(Object.keys(p.userProperties!)).toEqual(['z', 'a']);
  });
});

describe('wills survive a crash: stored from CONNECT on [MQTT-3.1.2-8]', () => {
  /** The store's wills by client id: 'connected' (as given in CONNECT) or 'delayed' (fireAt set). */
  const stored = async (broker: Broker) => {
    const out: Record<string, string> = {};
    for await (const w of broker.persistence.listWills())
      out[w.clientId] = w.fireAt === undefined ? 'connected' : 'delayed';
    return out;
  };
  const durable = (broker: Broker) => new Promise<void>((r) => broker.persistence.whenDurable(() => r()));

  it('every will is stored at CONNECT and deleted by a normal DISCONNECT, by its publication, or replaced by its delayed form', async () => {
    const { url, broker, inbox, untilMarker } = await setup();
    const clean = await connectAck(url, willOpts(5, 'will/a', { clientId: 'wa' }));
    const v4 = await connectAck(url, willOpts(4, 'will/b', { clientId: 'wb', clean: false }));
    await connectAck(url, { protocolVersion: 5, clientId: 'wc' }); // no will
    const delayedOpts: IClientOptions = {
      ...willOpts(5, 'will/d', { clientId: 'wd', clean: false, properties: { sessionExpiryInterval: 60 } }),
    };
    delayedOpts.will!.properties = { willDelayInterval: 30 };
    const delayed = await connectAck(url, delayedOpts);
    expect(await stored(broker)).toEqual({ wa: 'connected', wb: 'connected', wd: 'connected' });

    await clean.client.endAsync(); // normal DISCONNECT: deleted, not published [MQTT-3.1.2-10]
    v4.client.stream.destroy(); // published: deleted
    delayed.client.stream.destroy(); // waits for its delay: stored with fireAt
    expect(Inbox.brief(await inbox.take(1))).toEqual(['will/b:gone']);
    await vi.waitFor(() => expect(broker.wills.size).toBe(1));
    await durable(broker);
    expect(await stored(broker)).toEqual({ wd: 'delayed' });
    expect(await untilMarker()).toEqual(['mk:m']);
  });

  it('a broker started on the store of one that stopped without seeing the connections end publishes their wills: now, or after their delay when the session lives on', async () => {
    const store = new MemoryPersistence();
    const first = await startBroker({ persistence: store });
    const persistent = {
      protocolVersion: 5 as const,
      clean: false,
      properties: { sessionExpiryInterval: 300 },
    };
    // A persistent subscriber, offline when the crash comes: the wills are queued for it.
    const sub = await connectAck(first.url, { ...persistent, clientId: 'watcher' });
    await sub.client.subscribeAsync('will/#', { qos: 1 });
    await sub.client.endAsync();
    const withWill = (clientId: string, topic: string, over: Partial<IClientOptions> = {}, props = {}) => {
      const o = willOpts(5, topic, { clientId, ...over });
      o.will = { ...o.will!, retain: topic === 'will/clean', properties: props };
      return connectAck(first.url, o);
    };
    await withWill('clean', 'will/clean'); // Clean Start, Session Expiry 0: no session after the crash
    await connectAck(first.url, willOpts(4, 'will/v4', { clientId: 'v4', clean: false }));
    await withWill('expiring', 'will/expiring', {}, { messageExpiryInterval: 60 });
    await withWill('soon', 'will/soon', persistent, { willDelayInterval: 1 });
    await withWill('back', 'will/back', persistent, { willDelayInterval: 30 });
    const left = await withWill('left', 'will/left');
    await left.client.endAsync(); // a normal DISCONNECT before the crash: never published
    // A session offline at the crash, resumed afterwards with Session Expiry 0 and a will.
    const resumed = await connectAck(first.url, { ...persistent, clientId: 'resumed' });
    await resumed.client.endAsync();
    await vi.waitFor(() => expect(first.broker.sessions.get('resumed')?.conn).toBeNull());

    // The crash: the first broker never sees its clients go; a second one starts on its state.
    const t0 = Date.now();
    const second = await startBroker({ persistence: store });
    expect(second.broker.wills.size).toBe(2); // 'soon' and 'back' wait for their delay
    const back = await connectAck(second.url, { ...persistent, clientId: 'back' });
    expect(back.connack.sessionPresent).toBe(true);
    expect(second.broker.wills.size).toBe(1); // returned within the delay: cancelled [MQTT-3.1.3-9]

    const watcher = await connectAck(second.url, { ...persistent, clientId: 'watcher' });
    expect(watcher.connack.sessionPresent).toBe(true);
    const now = await watcher.inbox.take(3);
    expect(Inbox.brief(now).sort()).toEqual(['will/clean:gone', 'will/expiring:gone', 'will/v4:gone']);
    const exp = now.find((m) => m.topic === 'will/expiring')!.packet.properties?.messageExpiryInterval;
    expect(exp).toBeGreaterThan(50);
    expect(exp).toBeLessThanOrEqual(60);
    const [soon] = await watcher.inbox.take(1);
    expect(Inbox.brief([soon])).toEqual(['will/soon:gone']);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    const marker = await connect(second.url);
    await marker.publishAsync('will/marker', 'm', { qos: 1 });
    expect(Inbox.brief(await watcher.inbox.until('will/marker'))).toEqual(['will/marker:m']);
    // The retained will of the clean client, for a new subscriber.
    const late = await connectAck(second.url, { protocolVersion: 5 });
    await late.client.subscribeAsync('will/clean', { qos: 1 });
    expect(Inbox.brief(await late.inbox.take(1))).toEqual(['will/clean:gone']);

    // Resuming the offline session with Session Expiry 0 deletes its state from the store, but not
    // the will of the new connection.
    await connectAck(second.url, {
      ...willOpts(5, 'will/resumed', { clientId: 'resumed', clean: false }),
      properties: { sessionExpiryInterval: 0 },
    });
    await marker.publishAsync('will/marker', 'm', { qos: 1 }); // a round trip: the resume is done
    await durable(second.broker);
    expect(await stored(second.broker)).toMatchObject({ resumed: 'connected' });
  });
});
