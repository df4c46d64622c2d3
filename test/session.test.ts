import type { IClientOptions } from 'mqtt';
import type { IConnackPacket, IPublishPacket } from 'mqtt-packet';
import { describe, expect, it, vi } from 'vitest';
import type { Broker } from '../broker/index.js';
import { connect, RawClient, startBroker } from './helpers.js';
import {
  closed,
  connectAck,
  disconnectFrom,
  emptyIdConnect,
  Inbox,
  rawConnect,
  rawPublishes,
  rawSubscribe,
  uid,
} from './spec-helpers.js';

/** Resolves once the broker has seen this client's connection end. */
const offline = (broker: Broker, clientId: string) =>
  vi.waitFor(() => expect(broker.sessions.get(clientId)?.conn ?? null).toBeNull());

/** Options for a session that outlives its connection: 3.1.1 clean=false, 5.0 Clean Start 0 + expiry. */
function persistent(version: 4 | 5, clientId: string, expiry = 300): IClientOptions {
  return version === 5
    ? { protocolVersion: 5, clientId, clean: false, properties: { sessionExpiryInterval: expiry } }
    : { protocolVersion: 4, clientId, clean: false };
}

describe('Session Present [MQTT-3.2.2-2] [MQTT-3.2.2-3]', () => {
  // Each step connects the same client id, checks Session Present, and disconnects normally.
  const cases: { name: string; steps: [IClientOptions, boolean][] }[] = [
    {
      name: 'v4: clean=1 → 0; clean=0 (no session) → 0; clean=0 again → 1; clean=1 → 0; clean=0 → 0',
      steps: [
        [{ protocolVersion: 4, clean: true }, false],
        [{ protocolVersion: 4, clean: false }, false],
        [{ protocolVersion: 4, clean: false }, true],
        [{ protocolVersion: 4, clean: true }, false],
        [{ protocolVersion: 4, clean: false }, false],
      ],
    },
    {
      name: 'v5: Clean Start 1 → 0; Clean Start 0 with a stored session → 1; Session Expiry 0 ends it → 0',
      steps: [
        [{ protocolVersion: 5, clean: true, properties: { sessionExpiryInterval: 60 } }, false],
        [{ protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 60 } }, true],
        // Clean Start 1 discards the session it finds [MQTT-3.1.2-4].
        [{ protocolVersion: 5, clean: true, properties: { sessionExpiryInterval: 60 } }, false],
        [{ protocolVersion: 5, clean: false }, true],
        // The previous connection had Session Expiry 0: its session ended with it [MQTT-4.1.0-2].
        [{ protocolVersion: 5, clean: false }, false],
      ],
    },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const { url, broker } = await startBroker();
      const clientId = uid('sp');
      const seen: boolean[] = [];
      for (const [opts] of c.steps) {
        const { client, connack } = await connectAck(url, { clientId, ...opts });
        seen.push(connack.sessionPresent);
        await client.endAsync();
        await offline(broker, clientId);
      }
      expect(seen).toEqual(c.steps.map(([, sp]) => sp));
    });
  }
});

describe('persistent sessions', () => {
  for (const version of [4, 5] as const) {
    it(`v${version}: subscriptions survive; QoS 1/2 are queued while offline, QoS 0 is not [MQTT-3.1.2-5] [MQTT-4.5.0-1]`, async () => {
      const { url, broker } = await startBroker();
      const clientId = uid('off');
      const first = await connectAck(url, persistent(version, clientId));
      await first.client.subscribeAsync('off/#', { qos: 2 });
      await first.client.endAsync();
      await offline(broker, clientId);
      const pub = await connect(url, { protocolVersion: version });
      for (const qos of [0, 1, 2] as const) await pub.publishAsync('off/t', `q${qos}`, { qos });
      const again = await connectAck(url, persistent(version, clientId));
      expect(again.connack.sessionPresent).toBe(true);
      // A QoS 2 marker: mqtt.js emits QoS 2 messages at PUBREL, so a QoS 1 marker could overtake q2.
      await pub.publishAsync('off/marker', 'm', { qos: 2 });
      const got = await again.inbox.until('off/marker');
      expect(got.map((m) => [m.payload, m.packet.qos])).toEqual([
        ['q1', 1],
        ['q2', 2],
        ['m', 2],
      ]);
    });

    it(`v${version}: unacknowledged PUBLISH re-sent with DUP=1 and PUBREL re-sent, original ids and order [MQTT-4.4.0-1] [MQTT-3.3.1-1]`, async () => {
      const { port, url, broker } = await startBroker();
      const clientId = uid('resend');
      const connectOpts =
        version === 5
          ? { clientId, clean: false, properties: { sessionExpiryInterval: 300 } }
          : { clientId, clean: false };
      const a = await rawConnect(port, version, connectOpts);
      await rawSubscribe(a.raw, [{ topic: 'rs/#', qos: 2 }]);
      const pub = await connect(url, { protocolVersion: version });
      const plan = [
        ['m1', 1],
        ['m2', 2],
        ['m3', 1],
        ['m4', 2],
      ] as const;
      for (const [payload, qos] of plan) await pub.publishAsync('rs/t', payload, { qos });
      const sent = await rawPublishes(a.raw, 4);
      expect(sent.map((p) => [p.payload.toString(), p.qos, p.dup])).toEqual(
        plan.map(([m, q]) => [m, q, false]),
      );
      // m2 reaches PUBREL; nothing else is acknowledged.
      a.raw.send({ cmd: 'pubrec', messageId: sent[1].messageId });
      expect(await a.raw.next()).toMatchObject({ cmd: 'pubrel', messageId: sent[1].messageId });
      a.raw.socket.destroy();
      await offline(broker, clientId);

      const b = await rawConnect(port, version, connectOpts);
      expect(b.connack).toMatchObject({ cmd: 'connack', sessionPresent: true });
      const resent = [];
      for (let i = 0; i < 4; i++) resent.push(await b.raw.next());
      expect(resent.map((p) => [p?.cmd, p?.messageId, p?.cmd === 'publish' ? p.dup : null])).toEqual([
        ['publish', sent[0].messageId, true],
        ['pubrel', sent[1].messageId, null],
        ['publish', sent[2].messageId, true],
        ['publish', sent[3].messageId, true],
      ]);
      expect((resent[2] as IPublishPacket).payload.toString()).toBe('m3');
      // Completing every exchange empties the session's inflight state.
      b.raw.send({ cmd: 'puback', messageId: sent[0].messageId });
      b.raw.send({ cmd: 'pubcomp', messageId: sent[1].messageId });
      b.raw.send({ cmd: 'puback', messageId: sent[2].messageId });
      b.raw.send({ cmd: 'pubrec', messageId: sent[3].messageId });
      expect(await b.raw.nextOf('pubrel')).toMatchObject({ messageId: sent[3].messageId });
      b.raw.send({ cmd: 'pubcomp', messageId: sent[3].messageId });
      await vi.waitFor(() => expect(broker.sessions.get(clientId)?.inflight.size).toBe(0));
    });
  }

  it('v5: Clean Start 1 discards stored subscriptions and queued messages [MQTT-3.1.2-4]', async () => {
    const { url, broker } = await startBroker();
    const clientId = uid('cs');
    const first = await connectAck(url, persistent(5, clientId));
    await first.client.subscribeAsync('cs/#', { qos: 1 });
    await first.client.endAsync();
    await offline(broker, clientId);
    const pub = await connect(url, { protocolVersion: 5 });
    await pub.publishAsync('cs/queued', 'q', { qos: 1 });
    const again = await connectAck(url, { ...persistent(5, clientId), clean: true });
    expect(again.connack.sessionPresent).toBe(false);
    await again.client.subscribeAsync('mk', { qos: 1 });
    await pub.publishAsync('cs/live', 'l', { qos: 1 });
    await pub.publishAsync('mk', 'm', { qos: 1 });
    expect(Inbox.brief(await again.inbox.until('mk'))).toEqual(['mk:m']);
  });
});

describe('session takeover [MQTT-3.1.4-3]', () => {
  it('v5: the existing connection gets DISCONNECT 0x8E and is closed; the new one resumes the session', async () => {
    const { url } = await startBroker();
    const clientId = uid('take');
    const a = await connectAck(url, persistent(5, clientId));
    await a.client.subscribeAsync('tk/t', { qos: 1 });
    const disconnect = disconnectFrom(a.client);
    const aClosed = closed(a.client);
    const b = await connectAck(url, persistent(5, clientId));
    expect((await disconnect).reasonCode).toBe(0x8e);
    await aClosed;
    expect(b.connack.sessionPresent).toBe(true);
    // The subscription now delivers to the new connection.
    const pub = await connect(url);
    await pub.publishAsync('tk/t', 'to-b', { qos: 1 });
    expect(Inbox.brief(await b.inbox.take(1))).toEqual(['tk/t:to-b']);
  });

  it('v4: the existing connection is closed (no DISCONNECT in 3.1.1)', async () => {
    const { port } = await startBroker();
    const clientId = uid('take4');
    const a = await RawClient.connected(port, 4, { clientId });
    const b = await rawConnect(port, 4, { clientId });
    expect(b.connack).toMatchObject({ cmd: 'connack', returnCode: 0 });
    // Nothing is sent to the old connection; it is just closed.
    expect(await a.next()).toBeNull();
  });
});

describe('session expiry (5.0)', () => {
  it('a session with Session Expiry Interval 1 s is kept after disconnect, then discarded [MQTT-3.1.2-23] [MQTT-4.1.0-2]', async () => {
    const { url, broker } = await startBroker();
    const clientId = uid('exp');
    const a = await connectAck(url, persistent(5, clientId, 1));
    await a.client.subscribeAsync('exp/t', { qos: 1 });
    await a.client.endAsync();
    await offline(broker, clientId);
    expect(broker.sessions.has(clientId)).toBe(true);
    await vi.waitFor(() => expect(broker.sessions.has(clientId)).toBe(false), {
      timeout: 3000,
      interval: 50,
    });
    expect(broker.stats.subscriptions).toBe(0);
    const b = await connectAck(url, persistent(5, clientId, 1));
    expect(b.connack.sessionPresent).toBe(false);
  });

  it('a reconnect before expiry resumes the session', async () => {
    const { url, broker } = await startBroker();
    const clientId = uid('exp2');
    const a = await connectAck(url, persistent(5, clientId, 2));
    await a.client.endAsync();
    await offline(broker, clientId);
    const b = await connectAck(url, persistent(5, clientId, 2));
    expect(b.connack.sessionPresent).toBe(true);
  });

  it('Session Expiry Interval 0 on DISCONNECT ends a session that had 60 s (MQTT 5.0 §3.14.2.2.2)', async () => {
    const { url, broker } = await startBroker();
    const clientId = uid('exp3');
    const a = await connectAck(url, persistent(5, clientId, 60));
    await a.client.endAsync(false, { properties: { sessionExpiryInterval: 0 } });
    await vi.waitFor(() => expect(broker.sessions.has(clientId)).toBe(false));
  });

  it('a non-zero Session Expiry on DISCONNECT after 0 on CONNECT is a protocol error: DISCONNECT 0x82 (§3.14.2.2.2)', async () => {
    const { port, broker } = await startBroker();
    const clientId = uid('exp4');
    const { raw } = await rawConnect(port, 5, { clientId, properties: { sessionExpiryInterval: 0 } });
    raw.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 30 } });
    expect(await raw.next()).toMatchObject({ cmd: 'disconnect', reasonCode: 0x82 });
    expect(await raw.next()).toBeNull();
    await vi.waitFor(() => expect(broker.sessions.has(clientId)).toBe(false));
  });
});

describe('empty client identifier', () => {
  it('v5: the server assigns a unique Client Identifier and returns it in CONNACK [MQTT-3.2.2-16] [MQTT-3.1.3-7]', async () => {
    const { port, broker } = await startBroker();
    const ids: string[] = [];
    for (const clean of [true, false]) {
      const raw = await RawClient.open(port, 5);
      raw.write(emptyIdConnect(5, clean));
      const ack = (await raw.next()) as IConnackPacket;
      expect(ack.reasonCode).toBe(0);
      const id = ack.properties?.assignedClientIdentifier;
      expect(typeof id).toBe('string');
      expect(id).not.toBe('');
      expect(broker.sessions.has(id!)).toBe(true);
      ids.push(id!);
    }
    expect(ids[0]).not.toBe(ids[1]);
  });

  const v4cases = [
    { version: 4, clean: false, returnCode: 2, why: 'clean=0 is rejected with 0x02 [MQTT-3.1.3-8] (3.1.1)' },
    { version: 4, clean: true, returnCode: 0, why: 'clean=1 is accepted (3.1.1 §3.1.3.1)' },
    { version: 3, clean: true, returnCode: 2, why: '3.1 (MQIsdp) requires 1-23 characters: 0x02' },
  ] as const;
  for (const c of v4cases) {
    it(`v${c.version}: ${c.why}`, async () => {
      const { port } = await startBroker();
      const raw = await RawClient.open(port, c.version);
      raw.write(emptyIdConnect(c.version, c.clean));
      expect(await raw.next()).toMatchObject({
        cmd: 'connack',
        returnCode: c.returnCode,
        sessionPresent: false,
      });
      // A refused CONNECT is followed by closing the connection [MQTT-3.2.2-5] (3.1.1).
      if (c.returnCode !== 0) expect(await raw.next()).toBeNull();
    });
  }
});
