/**
 * Limits against abusive clients at CONNECT (issue #9): --max-connections, --connect-rate per
 * source address, --max-client-id-length, flapping detection and --max-connect-size. Each refusal
 * gets its protocol answer in 5.0 and 3.1.1, moves its counter in broker.stats, and leaves the
 * clients already connected served.
 */
import type { MqttClient } from 'mqtt';
import type { IConnackPacket, IConnectPacket } from 'mqtt-packet';
import { generate } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { AddressRate, Flapping } from '../broker/client-limits.js';
import { connect, connectPacket, nextMessages, RawClient, startBroker } from './helpers.js';

/** A CONNECT the broker must refuse: the CONNACK it sends, after which the connection closes. */
async function refused(
  port: number,
  version: 4 | 5,
  fields: Partial<IConnectPacket> = {},
): Promise<IConnackPacket> {
  const c = await RawClient.open(port, version);
  c.send(connectPacket(version, fields));
  const ack = await c.next();
  expect(ack?.cmd).toBe('connack');
  // A refused CONNECT is followed by closing the connection [MQTT-3.2.2-5] (3.1.1 [MQTT-3.2.2-5] too).
  await c.closed;
  return ack as IConnackPacket;
}

async function accepted(port: number, version: 4 | 5, fields: Partial<IConnectPacket> = {}) {
  const c = await RawClient.open(port, version);
  c.send(connectPacket(version, fields));
  const ack = (await c.next()) as IConnackPacket;
  expect(ack.cmd).toBe('connack');
  expect(version === 5 ? ack.reasonCode : ack.returnCode).toBe(0);
  return c;
}

/** The two clients still exchange a message. */
async function stillServed(sub: MqttClient, pub: MqttClient, topic = 'still/served'): Promise<void> {
  await sub.subscribeAsync(topic, { qos: 1 });
  const got = nextMessages(sub, 1);
  await pub.publishAsync(topic, 'yes', { qos: 1 });
  expect((await got)[0].payload).toBe('yes');
}

describe('--max-connections', () => {
  it('at the cap CONNECT gets CONNACK 0x97 (5.0) / 0x03 (3.1.1); connected clients are served; a freed slot is usable', async () => {
    const { port, url, broker } = await startBroker({ maxConnections: 2 });
    const a = await connect(url, { clientId: 'a' });
    const b = await connect(url, { clientId: 'b' });
    expect((await refused(port, 5)).reasonCode).toBe(0x97);
    expect((await refused(port, 4)).returnCode).toBe(3);
    expect(broker.stats.connectionsRefused.maxConnections).toBe(2);
    await stillServed(a, b);
    // Taking over one's own connected session is not one more connection.
    const a2 = await connect(url, { clientId: 'a', clean: false });
    expect(a2.connected).toBe(true);
    await b.endAsync();
    await accepted(port, 4);
  });

  it('refused connections are not counted: the cap is not used up by refusals', async () => {
    const { port, broker } = await startBroker({
      maxConnections: 1,
      hooks: { authenticate: async () => false },
    });
    for (let i = 0; i < 3; i++) expect((await refused(port, 5, { username: 'u' })).reasonCode).toBe(0x86);
    expect(broker.clientLimits.admitted).toBe(0);
    expect(broker.stats.connectionsRefused.maxConnections).toBe(0);
  });
});

describe('--connect-rate / --connect-burst (per source address)', () => {
  it('past the burst CONNECT gets CONNACK 0x9F (5.0) / 0x03 (3.1.1); connected clients are served', async () => {
    const { port, url, broker } = await startBroker({ connectRate: 0.001, connectBurst: 3 });
    const sub = await connect(url);
    const pub = await connect(url, { protocolVersion: 5 });
    await accepted(port, 4);
    expect((await refused(port, 5)).reasonCode).toBe(0x9f);
    expect((await refused(port, 4)).returnCode).toBe(3);
    expect(broker.stats.connectionsRefused.connectRate).toBe(2);
    await stillServed(sub, pub);
  });

  it('0 turns it off', async () => {
    const { port, broker } = await startBroker({ connectRate: 0, connectBurst: 1 });
    for (let i = 0; i < 5; i++) (await accepted(port, 4)).socket.destroy();
    expect(broker.stats.connectionsRefused.connectRate).toBe(0);
  });

  it('a bucket refills at the rate up to the burst; refilled buckets are pruned; the table is bounded', () => {
    const r = new AddressRate(2, 3, 4);
    const t = 1_000_000;
    expect([1, 2, 3, 4].map(() => r.take('a', t))).toEqual([true, true, true, false]);
    expect(r.take('a', t + 400)).toBe(false);
    expect(r.take('a', t + 600)).toBe(true); // more than one token back after 0.6 s at 2/s
    expect(r.take('b', t + 600)).toBe(true);
    // Full again 1.5 s after its last use: no different from an absent entry, so pruned.
    r.prune(t + 2099);
    expect(r.size).toBe(2);
    r.prune(t + 2100);
    expect(r.size).toBe(0);
    for (const a of ['1', '2', '3', '4', '5', '6']) r.take(a, t);
    expect(r.size).toBe(4);
  });
});

describe('--max-client-id-length', () => {
  it('a longer client id gets CONNACK 0x85 (5.0) / 0x02 (3.1.1); the length is in UTF-8 bytes', async () => {
    const { port, url, broker } = await startBroker({ maxClientIdLength: 32 });
    const sub = await connect(url, { clientId: 'x'.repeat(32) });
    const pub = await connect(url, { clientId: 'é'.repeat(16) }); // 32 bytes
    expect((await refused(port, 5, { clientId: 'x'.repeat(33) })).reasonCode).toBe(0x85);
    expect((await refused(port, 4, { clientId: 'é'.repeat(17) })).returnCode).toBe(2);
    expect(broker.stats.connectionsRefused.clientIdLength).toBe(2);
    await stillServed(sub, pub);
  });

  it('the default allows 256 bytes', async () => {
    const { port } = await startBroker();
    await accepted(port, 4, { clientId: 'd'.repeat(256) });
    expect((await refused(port, 5, { clientId: 'd'.repeat(257) })).reasonCode).toBe(0x85);
  });
});

describe('flapping detection (--flapping-*)', () => {
  it('a client id connecting more than N times in the window is refused with CONNACK 0x8A (5.0) / 0x05 (3.1.1)', async () => {
    const { port, url, broker } = await startBroker({
      flappingMaxConnects: 3,
      flappingWindow: 60,
      flappingBan: 60,
    });
    const sub = await connect(url);
    const pub = await connect(url);
    for (const [id, version] of [
      ['flap5', 5],
      ['flap4', 4],
    ] as const) {
      for (let i = 0; i < 3; i++) (await accepted(port, version, { clientId: id })).socket.destroy();
      const ack = await refused(port, version, { clientId: id });
      expect(version === 5 ? ack.reasonCode : ack.returnCode).toBe(version === 5 ? 0x8a : 5);
      // Banned now: refused again, before authentication.
      const again = await refused(port, version, { clientId: id });
      expect(version === 5 ? again.reasonCode : again.returnCode).toBe(version === 5 ? 0x8a : 5);
    }
    expect(broker.stats.connectionsRefused.flapping).toBe(4);
    expect(broker.stats.flappingBanned).toBe(2);
    // Another client id is not affected.
    await accepted(port, 5, { clientId: 'steady' });
    await stillServed(sub, pub);
  });

  it('connects that fail authentication are not counted: nobody can get another id banned', async () => {
    const { port, broker } = await startBroker({
      flappingMaxConnects: 2,
      hooks: { authenticate: async (_c, _u, password) => String(password) === 'right' },
    });
    for (let i = 0; i < 5; i++) {
      const ack = await refused(port, 4, {
        clientId: 'victim',
        username: 'u',
        password: Buffer.from('wrong'),
      });
      expect(ack.returnCode).toBe(4);
    }
    await accepted(port, 4, { clientId: 'victim', username: 'u', password: Buffer.from('right') });
    expect(broker.stats.connectionsRefused.flapping).toBe(0);
  });

  it('the ban ends after its time; windows and bans are pruned; the table is bounded', () => {
    const f = new Flapping(2, 10_000, 30_000, 3);
    const t = 5_000_000;
    expect([0, 1, 2].map((i) => f.connected('c', t + i))).toEqual([false, false, true]);
    expect(f.isBanned('c', t + 29_999)).toBe(true);
    expect(f.isBanned('c', t + 30_002)).toBe(false);
    // A new window after the last one passed: counting starts again.
    expect(f.connected('d', t)).toBe(false);
    expect(f.connected('d', t + 10_000)).toBe(false);
    expect(f.connected('d', t + 10_001)).toBe(false);
    expect(f.connected('d', t + 10_002)).toBe(true);
    f.connected('e', t + 20_000);
    f.prune(t + 20_000 + 9_999);
    expect(f.tracked).toBe(1);
    f.prune(t + 100_000);
    expect([f.tracked, f.banned]).toEqual([0, 0]);
    for (const id of ['1', '2', '3', '4', '5']) f.connected(id, t);
    expect(f.tracked).toBe(3);
  });

  it('0 turns it off', async () => {
    const { port } = await startBroker({ flappingMaxConnects: 0 });
    for (let i = 0; i < 20; i++) (await accepted(port, 4, { clientId: 'often' })).socket.destroy();
  });
});

describe('--max-connect-size (bytes buffered before CONNECT completes)', () => {
  it('a CONNECT declaring more is closed at once, without CONNACK; a connected client may still send large packets', async () => {
    const { port, url, broker } = await startBroker({ maxConnectSize: 1024 });
    const sub = await connect(url);
    const pub = await connect(url);
    // Only the fixed header and a Remaining Length of 100,000: closed before the body arrives.
    const c = await RawClient.open(port, 4);
    c.write([0x10, 0xa0, 0x8d, 0x06]);
    await c.closed;
    expect(await c.next()).toBeNull();
    // A whole CONNECT, over the bound (a large will), in one write: closed too, in both versions.
    for (const version of [4, 5] as const) {
      const big = await RawClient.open(port, version);
      big.write(
        generate(
          connectPacket(version, {
            will: { topic: 'w', payload: Buffer.alloc(2000), qos: 0, retain: false },
          }),
          { protocolVersion: version },
        ),
      );
      await big.closed;
      expect(await big.next()).toBeNull();
    }
    expect(broker.stats.connectionsRefused.connectSize).toBe(3);
    // After CONNECT --max-packet-size applies.
    await sub.subscribeAsync('big', { qos: 1 });
    const got = nextMessages(sub, 1);
    await pub.publishAsync('big', 'b'.repeat(10_000), { qos: 1 });
    expect((await got)[0].payload.length).toBe(10_000);
  });

  it('a CONNECT within it is accepted', async () => {
    const { port } = await startBroker({ maxConnectSize: 4096 });
    await accepted(port, 5, { will: { topic: 'w', payload: Buffer.alloc(3000), qos: 0, retain: false } });
  });
});
